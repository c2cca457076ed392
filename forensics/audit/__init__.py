"""The configuration posture audit: LiteLLM config.yaml, nginx configuration and LiteLLM's startup log checked
against the incident write-up's checklist, each finding with its evidence (file, line), its price and its fix."""
from __future__ import annotations

from forensics.audit.finding import Finding
from forensics.audit.run import AuditResult, ConfigError, audit

__all__ = ["AuditResult", "ConfigError", "Finding", "audit"]

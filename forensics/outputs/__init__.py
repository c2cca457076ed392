"""What leaves the tool: findings.json, the report, the evidence bundle."""

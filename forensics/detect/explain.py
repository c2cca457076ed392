"""Why a request was flagged, in an analyst's words: the (at most three) features furthest from the baseline.

Each reason states only what the data shows: a value against its usual one in the quiet baseline, where "usual"
for a field that normal clients leave out (max_tokens) is "not sent", never a number that reads like a logging gap.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from forensics.detect.features import BEYOND, FEATURES

TOP_REASONS = 3
FAR_PAST = 0.5                # past the training range by this share of its range: as far past as any
KEY_ONLY = ("key_rate_1m", "key_rate_15m", "key_ips_1h")      # zero by construction without a key

WORDS = {
    "prompt_tokens": "{v:,.0f} prompt tokens (usually {u:,.0f})",
    "completion_tokens": "{v:,.0f} completion tokens (usually {u:,.0f})",
    "max_tokens": "max_tokens {v:,.0f} (usually {u:,.0f})",
    "output_price_mtok": "a model at ${v:g} per M output tokens (usually ${u:g})",
    "ip_rate_1m": "{v:,.0f} requests from this address in a minute (usually {u:,.0f})",
    "ip_rate_15m": "{v:,.0f} requests from this address in 15 minutes (usually {u:,.0f})",
    "key_rate_1m": "{v:,.0f} requests with this key in a minute (usually {u:,.0f})",
    "key_rate_15m": "{v:,.0f} requests with this key in 15 minutes (usually {u:,.0f})",
    "ip_auth_failures_15m": "{v:,.0f} rejected keys from this address in 15 minutes (usually {u:,.0f})",
    "ip_keys_1h": "{v:,.0f} keys used from this address in an hour (usually {u:,.0f})",
    "key_ips_1h": "this key used from {v:,.0f} addresses in an hour (usually {u:,.0f})",
}


def describe(feature: str, value, median, keyless: bool = False, shown: bool = True) -> str:
    """One feature in words, against its usual (baseline median, on the model's scale) value; `shown` false: the
    training rows never showed the feature (its 'usual' is unknown, not 0)."""
    v = float(value)
    whose = "requests without a key" if keyless else "the key"
    if feature == "keyless":
        return "no virtual key on the request" if v else "a virtual key on the request"
    if feature == "public_address":
        return "from a public address" if v else "from a private address"
    if feature == "auth_failure":
        return "rejected for its key" if v else "accepted"
    if feature == "max_tokens" and shown is False:
        return f"max_tokens {v:,.0f} (the baseline's records do not show max_tokens)"
    if feature == "max_tokens" and float(np.expm1(median)) < 0.5:
        return f"max_tokens {v:,.0f} (usually not sent)" if v else "max_tokens not sent"
    if feature == "key_price_rise":
        return f"a dearer model than {whose} usually use ({v:,.1f} of its usual spreads above its average)"
    if feature == "key_prompt_rise":
        return f"a bigger prompt than {whose} usually send ({v:,.1f} of its usual spreads above its average)"
    if feature == "key_max_tokens_rise":
        return f"a higher max_tokens than {whose} usually ask for ({v:,.1f} of its usual spreads above its average)"
    if feature == "key_rate_rise":
        return (f"faster from this network than {whose} usually go ({v:,.1f} of its usual spreads above its "
                "average pace)")
    if feature == "completion_per_prompt":    # on the model's scale a log2 of the ratio
        return f"{v:.2g} completion tokens per prompt token (usually {2 ** median:.2g})"
    if feature == "key_public_shift":
        return (f"from a public address, where {1 - v:.0%} of {whose} in the baseline came from public ones"
                if v > 0 else f"from the kind of address {whose} always used")
    if feature == "key_new_address":
        return (f"a public address in a network (/24) {whose} {'hardly ever' if v < 0.95 else 'never'} used in the "
                "baseline")
    if feature == "key_new_agent":
        return f"client software {whose} {'hardly ever' if v < 0.95 else 'never'} used in the baseline"
    if feature in WORDS:
        return WORDS[feature].format(v=v, u=float(np.expm1(median)))
    return f"{feature.replace('_', ' ')} {v:g} (usually {median:g})"


def reasons(card, frame: pd.DataFrame, x: pd.DataFrame, flagged: np.ndarray) -> np.ndarray:
    """Per request: '' when not flagged, else its furthest features in words ('; '-joined): first those past
    anything seen in training (furthest first), then those furthest from their usual value."""
    out = np.full(len(frame), "", dtype=object)
    rows = np.flatnonzero(flagged)
    if not len(rows):
        return out
    features = list(FEATURES)
    medians = np.array([card.medians[c] for c in features])
    spreads = np.array([card.spreads[c] for c in features])
    xs = x.iloc[rows][features].astype("float64").to_numpy()
    z = np.abs((xs - medians) / spreads)
    beyond = np.array([c in BEYOND for c in features])
    ceilings = np.array([np.inf if card.ceilings[c] is None else card.ceilings[c] for c in features])
    ranges = np.array([card.ranges[c] for c in features])
    with np.errstate(invalid="ignore"):
        # past the training range outranks z; half a range past or more is far past alike, and then what the request
        # asked for (a dearer model, no key) comes before how it departs from its key (a new network, new software)
        past = beyond * np.minimum(np.maximum(xs - ceilings, 0) / ranges, FAR_PAST)
        z = np.where(past > 0, 1 + past * 10, z / (1 + z))
    keyless = frame["keyless"].to_numpy()[rows].astype(bool)
    z[np.ix_(keyless, [features.index(c) for c in KEY_ONLY])] = -1.0   # no key: no key rate to speak of
    z[z == 0] = -1.0                         # a feature at its usual value explains nothing
    z[np.isnan(xs)] = -1.0                   # nor one the request's record does not show
    both = z[:, features.index("key_public_shift")] > 0               # says "from a public address" already
    z[both, features.index("public_address")] = -1.0
    top = np.argsort(-z, axis=1, kind="stable")[:, :TOP_REASONS]
    values = frame.iloc[rows][features].astype("float64").fillna(0.0).to_numpy()
    for j, i in enumerate(rows):
        out[i] = "; ".join(describe(features[k], values[j, k], medians[k], keyless[j],
                                    card.ceilings[features[k]] is not None) for k in top[j] if z[j, k] > 0)
    return out

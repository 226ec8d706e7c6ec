"""Who the simulated units are: segments, propensity, user agents.

The segment mix is a fixed joint distribution (platform -> device, independent country and
is_new_user); `segment_table()` lists every combination with its probability so the ground truth can
average segment effects over it exactly.
"""

from __future__ import annotations

import itertools

import numpy as np

PLATFORMS = ["web", "ios", "android"]
PLATFORM_P = [0.5, 0.25, 0.25]
DEVICES = ["desktop", "mobile", "tablet"]
DEVICE_P_BY_PLATFORM = {"web": [0.70, 0.25, 0.05], "ios": [0.0, 0.85, 0.15], "android": [0.0, 0.90, 0.10]}
COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR"]
COUNTRY_P = [0.40, 0.15, 0.15, 0.10, 0.10, 0.10]
NEW_USER_P = 0.30
PROPENSITY_RANGE = (0.4, 1.6)  # uniform, mean 1

APP_VERSION = {"web": "web-2026.11.0", "ios": "ios-5.12.1", "android": "android-5.12.0"}
USER_AGENTS = {
    ("web", "desktop"): "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    ("web", "mobile"): "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    ("web", "tablet"): "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/604.1",
    ("ios", "mobile"): "ShopApp/5.12.1 (iPhone; iOS 18.1; Scale/3.00)",
    ("ios", "tablet"): "ShopApp/5.12.1 (iPad; iOS 18.1; Scale/2.00)",
    ("android", "mobile"): "ShopApp/5.12.0 (Linux; Android 14; SM-S918B)",
    ("android", "tablet"): "ShopApp/5.12.0 (Linux; Android 14; SM-X910)",
}
BOT_USER_AGENTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0 Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
]


def segment_table() -> list[tuple[dict, float]]:
    """Every (platform, device, country, is_new_user) combination with its probability."""
    rows = []
    for (pi, plat), (ci, country), new in itertools.product(
        enumerate(PLATFORMS), enumerate(COUNTRIES), (False, True)
    ):
        for di, dev in enumerate(DEVICES):
            p = PLATFORM_P[pi] * DEVICE_P_BY_PLATFORM[plat][di] * COUNTRY_P[ci] * (NEW_USER_P if new else 1 - NEW_USER_P)
            if p > 0:
                rows.append(({"platform": plat, "device": dev, "country": country, "is_new_user": new}, p))
    return rows


def draw_units(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Segment columns (as integer codes into the lists above) and the latent propensity."""
    platform = rng.choice(len(PLATFORMS), size=n, p=PLATFORM_P)
    device = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for pi, plat in enumerate(PLATFORMS):
        mask = platform == pi
        cum = np.cumsum(DEVICE_P_BY_PLATFORM[plat])
        cum[-1] = 1.0 + 1e-12
        device[mask] = np.searchsorted(cum, u[mask], side="right")
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)
    is_new = rng.random(n) < NEW_USER_P
    propensity = rng.uniform(*PROPENSITY_RANGE, size=n)
    return {"platform": platform, "device": device, "country": country, "is_new_user": is_new, "propensity": propensity}


def segment_values(units: dict[str, np.ndarray], segment: str) -> np.ndarray:
    """The segment column as the values used in the telemetry context (str, or bool)."""
    if segment == "platform":
        return np.asarray(PLATFORMS, dtype=object)[units["platform"]]
    if segment == "device":
        return np.asarray(DEVICES, dtype=object)[units["device"]]
    if segment == "country":
        return np.asarray(COUNTRIES, dtype=object)[units["country"]]
    if segment == "is_new_user":
        return units["is_new_user"]
    raise KeyError(segment)


def segment_matches(values: np.ndarray, segment: str, wanted) -> np.ndarray:
    if segment == "is_new_user":
        want = wanted if isinstance(wanted, bool) else str(wanted).lower() in ("true", "1", "yes")
        return values == want
    return values == str(wanted)

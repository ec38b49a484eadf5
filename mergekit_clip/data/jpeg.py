"""One JPEG round trip in memory, shared by the synthetic benchmark and the pre-training corpus."""

from __future__ import annotations

import cv2
import numpy as np


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (RGB, float or uint8) stored as JPEG at ``quality`` and decoded again, as float32 RGB."""
    bgr = cv2.cvtColor(np.clip(img, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 could not JPEG-encode a synthetic frame")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)

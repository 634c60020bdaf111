"""Where the kiosk screen goes: the Linux framebuffer of the Pi's display, or a PNG file.

The framebuffer needs no desktop, no X and no SDL: Raspberry Pi OS exposes the HDMI/DSI screen
as /dev/fb0 (group `video`), geometry in /sys/class/graphics/fb0. 16-bit (RGB565) and 32-bit
(BGRX) layouts are supported, which is what the Pi's KMS fbdev emulation offers. The file
display writes the screen atomically to a PNG: simulation, and a technician's remote look.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from drivers.base import DriverError


class DisplayError(DriverError):
    """The screen could not be opened or written."""


class FramebufferDisplay:
    def __init__(self, device: str = "/dev/fb0", sysfs: str | None = None) -> None:
        self.device = device
        name = Path(device).name
        self.sysfs = Path(sysfs or f"/sys/class/graphics/{name}")
        try:
            w, h = (int(x) for x in (self.sysfs / "virtual_size").read_text().strip().split(","))
            self.bpp = int((self.sysfs / "bits_per_pixel").read_text().strip())
            stride_file = self.sysfs / "stride"
            self.stride = int(stride_file.read_text().strip()) if stride_file.exists() else w * self.bpp // 8
        except (OSError, ValueError) as e:
            raise DisplayError(f"no framebuffer {device} ({e}); fix: connect the display, or set "
                               "[kiosk] display = \"file\"") from None
        if self.bpp not in (16, 32):
            raise DisplayError(f"{device} uses {self.bpp} bits per pixel; fix: set framebuffer_depth=32 "
                               "(or 16) in /boot/firmware/config.txt")
        self.size = (w, h)

    def show(self, image: Any) -> None:
        """Write a PIL image (resized to the screen if needed)."""
        if image.size != self.size:
            image = image.resize(self.size)
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if self.bpp == 16:
            r, g, b = (rgb[:, :, i].astype(np.uint16) for i in range(3))
            px = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
            data = px.astype("<u2")
            row_bytes = self.size[0] * 2
        else:
            data = np.dstack([rgb[:, :, 2], rgb[:, :, 1], rgb[:, :, 0], np.full(rgb.shape[:2], 255, np.uint8)])
            row_bytes = self.size[0] * 4
        raw = data.tobytes()
        if self.stride != row_bytes:  # pad each row to the framebuffer's line length
            rows = [raw[i * row_bytes:(i + 1) * row_bytes].ljust(self.stride, b"\0") for i in range(self.size[1])]
            raw = b"".join(rows)
        try:
            with open(self.device, "r+b", buffering=0) as fb:
                fb.write(raw)
        except OSError as e:
            raise DisplayError(f"cannot write {self.device} ({e.strerror}); fix: add the service user to "
                               "the video group") from None

    def close(self) -> None:
        pass


class FileDisplay:
    def __init__(self, path: str, size: tuple[int, int] = (1280, 720)) -> None:
        self.path = Path(path)
        self.size = size
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DisplayError(f"cannot create {self.path.parent} ({e.strerror}); fix: set [kiosk] file_path "
                               "to a writable place") from None

    def show(self, image: Any) -> None:
        tmp = self.path.with_suffix(".tmp.png")
        try:
            image.save(tmp, format="PNG")
            os.replace(tmp, self.path)
        except OSError as e:
            raise DisplayError(f"cannot write {self.path} ({e.strerror}); fix: free disk space or set "
                               "[kiosk] file_path") from None

    def close(self) -> None:
        pass

"""image: generate an image with Pillow, then filter, resize, rotate and encode it."""

import hashlib
import io

from PIL import Image, ImageFilter


def main(args):
    size = int(args.get("size", 256))
    seed = int(args.get("seed", 1))
    img = Image.new("RGB", (size, size))
    pixels = [
        ((x * 7 + seed) % 256, (y * 3) % 256, (x ^ y) % 256)
        for y in range(size)
        for x in range(size)
    ]
    img.putdata(pixels)
    img = img.filter(ImageFilter.GaussianBlur(2)).filter(ImageFilter.EDGE_ENHANCE)
    img = img.resize((size // 2, size // 2)).rotate(30, expand=True).convert("L")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    data = out.getvalue()
    return {"size": size, "jpeg_bytes": len(data), "sha1": hashlib.sha1(data).hexdigest()}

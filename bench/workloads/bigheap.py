"""bigheap: a 100 MB action that writes `pages` of its heap per request."""

HEAP = bytearray(100 * 1024 * 1024)
PAGE = 4096


def main(args):
    pages = int(args.get("pages", 2000))
    stride = len(HEAP) // PAGE // max(1, pages)
    for i in range(pages):
        HEAP[i * stride * PAGE] = (HEAP[i * stride * PAGE] + 1) & 0xFF
    return {"pages": pages}

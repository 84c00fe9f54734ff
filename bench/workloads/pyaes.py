"""pyaes: AES-128 in CTR mode over a random message with the pure-Python pyaes package."""

import random

import pyaes


def main(args):
    length = int(args.get("length", 4096))
    iterations = int(args.get("iterations", 1))
    rng = random.Random(int(args.get("seed", 1)))
    message = bytes(rng.getrandbits(8) for _ in range(length))
    key = bytes(rng.getrandbits(8) for _ in range(16))
    ciphertext = b""
    for _ in range(iterations):
        ciphertext = pyaes.AESModeOfOperationCTR(key).encrypt(message)
        plaintext = pyaes.AESModeOfOperationCTR(key).decrypt(ciphertext)
        if plaintext != message:
            return {"error": "AES round trip failed"}
    return {"length": length, "iterations": iterations, "head": ciphertext[:8].hex()}

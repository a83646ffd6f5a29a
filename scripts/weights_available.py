"""Exit 0 when a Hub repo's SNAC weights can be had (local HF cache, or the Hub answers), else 1.

    python scripts/weights_available.py hubertsiuzdak/snac_24khz

Used by `make demo` to choose between pretrained and random weights without a 20 s retry loop.
"""

import os
import socket
import sys


def cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return all(
        isinstance(try_to_load_from_cache(repo, f), str) for f in ("config.json", "pytorch_model.bin")
    )


def hub_answers(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if cached(sys.argv[1]) or hub_answers() else 1)

"""Measure device-to-device copy bandwidth (bytes read + written per second), the decode floor's
denominator. Prints ``RESULT {"copy_bandwidth_gb_s": ...}``."""

from __future__ import annotations

import json


def main() -> None:
    import torch

    n_bytes = 4 << 30  # 4 GiB: far beyond the 50 MB L2, so this measures HBM
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    median = times[len(times) // 2]
    assert torch.equal(dst, src)
    print(
        "RESULT "
        + json.dumps(
            {
                "copy_bytes": 2 * n_bytes,
                "copy_seconds_median": median,
                "copy_bandwidth_gb_s": 2 * n_bytes / median / 1e9,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

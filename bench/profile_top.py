"""`python -m bench.profile_top FILE [N]`: where the time goes in a py-spy profile of `--profile`.

Prints the N functions with the most samples of their own (self) and of everything they call
(inclusive), from py-spy's collapsed ("raw") format: one stack per line, frames separated by
semicolons, then a space and a sample count.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

LINE_NUMBER = re.compile(r":\d+\)$")


def top(path: str, count: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, samples = line.rstrip().rpartition(" ")
            if not stack:
                continue
            frames = [LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
            total += int(samples)
            own[frames[-1]] += int(samples)
            for frame in set(frames):
                inclusive[frame] += int(samples)
    out = [f"{total} samples", "", "self:"]
    out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(count)]
    out += ["", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(count)]
    return "\n".join(out)


if __name__ == "__main__":
    print(top(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25))

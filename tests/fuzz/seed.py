"""Write the committed seed corpus: ``python -m tests.fuzz.seed`` (deterministic).

Each target gets inputs drawn from its Hypothesis strategy with a fixed seed: valid-looking
JSON, RESP, frames and requests that byte mutation alone would take long to reach. The
long runs start from these (and write what they find under ``.fuzz/``, not here).
"""

from __future__ import annotations

import hashlib
import shutil

from hypothesis import HealthCheck, given, settings

from tests.fuzz.__main__ import HERE
from tests.fuzz.targets import TARGETS

PER_TARGET = 40


def main() -> None:
    for name, target in TARGETS.items():
        found: list[bytes] = []

        @settings(
            max_examples=PER_TARGET,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(target.strategy)
        def collect(data: bytes) -> None:
            found.append(data)  # noqa: B023 - collected during this loop iteration

        collect()
        folder = HERE / "corpus" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for data in dict.fromkeys(found):
            (folder / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{name}: {len(list(folder.iterdir()))} seeds")


if __name__ == "__main__":
    main()

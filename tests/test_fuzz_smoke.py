"""A small fuzzing run with a fixed seed (bench/fuzz/, whose docstring says what it sends and
checks): a few hundred random documents against `lodge serve` on a throwaway database, and not one
5xx, INTERNAL, hang, partial write of a failed mutation or missing audit row. The long runs stay
by hand (`uv run python -m bench.fuzz --examples 10000`); this one keeps what they found fixed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import need

ROOT = Path(__file__).resolve().parents[1]
SEED = 1
EXAMPLES = 300


def test_a_fixed_seed_fuzz_run_finds_nothing(server_url: str, redis_url: str | None) -> None:
    need(redis_url is not None, "TEST_REDIS_URL is not set (the fuzzed server uses the Redis bus)")
    assert redis_url is not None
    command = [
        *(sys.executable, "-m", "bench.fuzz", "--examples", str(EXAMPLES), "--seed", str(SEED)),
        *("--rev", "worktree", "--progress", "0", "--redis", redis_url),
    ]
    env = {**os.environ, "BENCH_DATABASE_URL": server_url}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    problems = re.search(r"^problems: (\d+)", output, re.M)
    seeded = re.search(r"seed failures: (\d+)", output)
    assert problems and seeded, output
    assert (int(problems.group(1)), int(seeded.group(1))) == (0, 0), (
        f"`uv run python -m bench.fuzz --examples {EXAMPLES} --seed {SEED} --rev worktree` found:\n{output}"
    )

"""The benchmark harness never hangs: the fake server's in-flight accounting terminates on second
boundaries (the float step that once spun it forever), and a benchmark past its deadline fails loudly."""

import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_spread_terminates_on_a_second_boundary_and_adds_up():
    from fake_server import spread

    # a change exactly on a second's boundary, where the old loop's step was 0.0 (found by search):
    first, t = 8160.425853269678, 8196.425853269677
    assert int(t - first) == 35 and first + 35 + 1 - t == 0.0  # the old loop: step 0, forever
    timeline: dict[int, float] = {}
    spread(timeline, 3, t - first, t - first + 2.5)
    assert abs(sum(timeline.values()) - 3 * 2.5) < 1e-9
    assert set(timeline) <= {35, 36, 37, 38}
    spread(timeline, 0, 0.0, 1.0)  # nothing in flight: nothing added
    spread(timeline, 2, 5.0, 5.0)  # an empty interval
    assert abs(sum(timeline.values()) - 7.5) < 1e-9


def test_benchmark_past_its_deadline_fails_loudly(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(f"import sys, time\nsys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
                      "from _common import Server, deadline\n"
                      "deadline(1.5, 'hang.py')\n"
                      "server = Server(latency=0.0)\n"
                      "time.sleep(60)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "DEADLINE: hang.py still running after 1.5 s" in out.stderr

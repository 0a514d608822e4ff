"""pass@k and ``agentsd eval-code``: the estimator against closed forms, the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest

from agentsd.code_eval import evaluate, load_problems, load_samples, pass_at_k


@pytest.mark.parametrize("n,c,k", [(5, 1, 1), (5, 1, 2), (10, 3, 4), (20, 7, 10), (3, 0, 3)])
def test_pass_at_k_matches_the_binomial_form(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_extremes_and_errors():
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 6, 5) == 1.0
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    with pytest.raises(ValueError, match="at least 3"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


@pytest.fixture(scope="module")
def local_ok():
    from agentsd.sandbox.local import probe

    if not probe().ok:
        pytest.skip(f"local sandbox unavailable: {probe().reason}")


def test_mixed_samples_give_the_expected_pass_at_k(local_ok):
    probs = load_problems("humaneval")
    p0 = probs["HumanEval/0"]
    samples = [{"task_id": "HumanEval/0", "completion": p0.canonical_solution},
               {"task_id": "HumanEval/0", "completion": "    return True\n"},
               {"task_id": "HumanEval/0", "completion": "    while True:\n        pass\n"},
               {"task_id": "HumanEval/0", "completion": "    import os; os.system('rm -rf /')\n"}]
    summary, rows = evaluate(probs, samples, ks=(1, 2, 4), workers=2, timeout_s=3, progress=False)
    assert [r["passed"] for r in rows] == [True, False, False, False]
    assert rows[2]["status"] == "timeout"
    assert summary["pass@1"] == pytest.approx(0.25)
    assert summary["pass@2"] == pytest.approx(pass_at_k(4, 1, 2))
    assert summary["pass@4"] == 1.0 and summary["sandbox_errors"] == 0


def test_cli_canonical_subset_and_bad_input(local_ok, tmp_path, capsys):
    from agentsd.cli import main

    probs = load_problems("humaneval")
    ids = list(probs)[:12]
    pfile = tmp_path / "problems.jsonl"
    pfile.write_text("".join(json.dumps({"task_id": t, "prompt": probs[t].prompt, "test": probs[t].test,
                                          "entry_point": probs[t].entry_point,
                                          "canonical_solution": probs[t].canonical_solution}) + "\n"
                             for t in ids))
    out = tmp_path / "res.jsonl"
    assert main(["eval-code", "--problems", str(pfile), "--samples", "canonical", "--quiet",
                 "--workers", "2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pass@1"] == 1.0 and summary["problems"] == 12
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(r["passed"] for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/99999", "completion": "x"}\n')
    with pytest.raises(SystemExit, match="unknown task_id"):
        load_samples(str(bad), probs)


@pytest.mark.slow
def test_canonical_humaneval_scores_pass_at_1_of_one(local_ok):
    probs = load_problems("humaneval")
    summary, rows = evaluate(probs, load_samples("canonical", probs), workers=2, progress=False)
    failed = [r for r in rows if not r["passed"]]
    assert summary["pass@1"] == 1.0, failed[:3]


def test_isolated_grader_cannot_be_forged_but_the_program_harness_can(local_ok):
    """A sample that exits 0 before check() runs passes HumanEval's one-program harness
    (``--grader program``) and fails the default isolated grader."""
    probs = load_problems("humaneval")
    forged = [{"task_id": "HumanEval/0", "completion": "    pass\nimport os\nos._exit(0)\n"},
              {"task_id": "HumanEval/0", "completion": "    return _Any()\nclass _Any:\n"
                                                       "    def __eq__(self, o): return True\n"}]
    summary, rows = evaluate(probs, forged, workers=2, timeout_s=5, progress=False)
    assert summary["pass@1"] == 0.0 and not any(r["passed"] for r in rows), rows
    program, _ = evaluate(probs, forged[:1], workers=1, timeout_s=5, progress=False, grader="program")
    assert program["pass@1"] == 1.0  # why the program harness is not the default


@pytest.mark.parametrize("line", ['[1, 2]', '"HumanEval/0"', '7', 'null'])
def test_samples_that_are_not_objects_are_named_errors(local_ok, tmp_path, line):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(SystemExit, match="bad.jsonl:1: each line must be a JSON object"):
        load_samples(str(bad), load_problems("humaneval"))


def test_unreachable_sandbox_fails_loudly(tmp_path, capsys):
    """Issue 23: an unreachable http sandbox exited 0 with pass@1 0.0 and 164 sandbox errors."""
    from agentsd.cli import main

    t0 = __import__("time").monotonic()
    rc = main(["eval-code", "--samples", "canonical", "--backend", "http", "--url",
               "http://127.0.0.1:9", "--quiet", "--out", str(tmp_path / "r.jsonl")])
    assert rc == 3
    err = capsys.readouterr().err
    assert "cannot run a trivial program" in err and "127.0.0.1:9" in err
    assert __import__("time").monotonic() - t0 < 30


def test_sandbox_errors_over_the_threshold_exit_nonzero(local_ok, tmp_path, capsys, monkeypatch):
    from agentsd import code_eval
    from agentsd.cli import main

    real = code_eval._run_isolated

    def some_fail(*a, **kw):
        rows = real(*a, **kw)
        rows[0].update(status="sandbox_error", passed=False, detail="injected failure")
        return rows

    monkeypatch.setattr(code_eval, "_run_isolated", some_fail)
    probs = load_problems("humaneval")
    pfile = tmp_path / "p.jsonl"
    pfile.write_text("".join(json.dumps({"task_id": t, "prompt": probs[t].prompt, "test": probs[t].test,
                                          "entry_point": probs[t].entry_point,
                                          "canonical_solution": probs[t].canonical_solution}) + "\n"
                             for t in list(probs)[:2]))
    args = ["eval-code", "--problems", str(pfile), "--samples", "canonical", "--quiet", "--workers", "2",
            "--out", str(tmp_path / "r.jsonl")]
    assert main(args) == 3
    assert "1 of 2 samples hit sandbox errors" in capsys.readouterr().err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2  # results still written
    assert main(args + ["--max-sandbox-errors", "1"]) == 0


def test_a_forging_sample_does_not_stop_the_others(local_ok, tmp_path, capsys):
    """Issue 23: one sample printing a wrong-shape report made eval-code exit 1 with no results."""
    from agentsd.cli import main

    forge = ("    return None\nimport json, os, sys\nspec, fr = None, sys._getframe()\n"
             "while fr is not None:\n    for v in list(fr.f_locals.values()):\n"
             "        if isinstance(v, dict) and 'groups' in v:\n            spec = v\n"
             "    fr = fr.f_back\n"
             "if spec is not None:\n"
             "    rows = [[5 for _ in g] for g in spec['groups']]\n"
             "    print('\\n' + spec.get('nonce', '') + json.dumps({'protocol': 2, 'load_error': None, "
             "'results': rows, 'stdout': ''}))\n    sys.stdout.flush()\n    os._exit(0)\n")
    probs = load_problems("humaneval")
    p0 = probs["HumanEval/0"]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"task_id": "HumanEval/0", "completion": c}) + "\n"
                               for c in (p0.canonical_solution, forge, p0.canonical_solution, forge)))
    out = tmp_path / "r.jsonl"
    assert main(["eval-code", "--samples", str(samples), "--quiet", "--workers", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, False, True, False]


@pytest.mark.parametrize("flag,value", [("--workers", "0"), ("--workers", "-2"), ("--timeout", "nan"),
                                        ("--timeout", "-1"), ("--max-sandbox-errors", "-1")])
def test_eval_code_validates_counts(flag, value, capsys):
    from agentsd.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval-code", "--samples", "canonical", flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err

"""The mechanised Theorem 1 (lean/coq/GlobalBound.v, lean/GlobalBound.lean) and `blockcert bound --emit`.

The Coq tests need `coqc` (Debian package `coq`). Without it they skip, unless BLOCKCERT_REQUIRE_COQ=1
(set in CI), where a missing coqc is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import attrs
import pytest

from blockcert.bounds import emit
from blockcert.bounds.compose import bound
from blockcert.pipeline.certify import run
from blockcert.pipeline.stitch import stitch
from test_run import make_model_dir

LEAN = Path(__file__).resolve().parent.parent / "lean"
COQ_DEV = LEAN / "coq"
# The axioms of Coq's standard real numbers (Coq >= 8.11 builds R from Dedekind cuts on these); nothing else
# may appear in `Print Assumptions` of a theorem.
REAL_AXIOMS = {
    "ClassicalDedekindReals.sig_forall_dec",
    "ClassicalDedekindReals.sig_not_dec",
    "FunctionalExtensionality.functional_extensionality_dep",
}
MAIN_THEOREMS = ("global_bound", "global_bound_delta", "theorem1", "global_bound_sum_eps", "traced_bound",
                 "traced_bound_ball", "global_bound_normed", "delta_closed_form", "instance_global", "instance_traced")


@pytest.fixture(scope="module")
def coqc() -> str:
    path = shutil.which("coqc")
    if path is None:
        if os.environ.get("BLOCKCERT_REQUIRE_COQ") == "1":
            pytest.fail("coqc not found but BLOCKCERT_REQUIRE_COQ=1: install it with `apt-get install -y coq`")
        pytest.skip("coqc not found (apt-get install -y coq); CI sets BLOCKCERT_REQUIRE_COQ=1 and runs these")
    return path


def compile_coq(coqc: str, dev: Path, file: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([coqc, "-Q", str(dev), "BlockCert", str(file)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def coq_dev(coqc, tmp_path_factory) -> Path:
    """The development compiled in a scratch copy (never writes build outputs into the checkout)."""
    dev = tmp_path_factory.mktemp("coqdev")
    shutil.copy(COQ_DEV / "GlobalBound.v", dev / "GlobalBound.v")
    done = compile_coq(coqc, dev, dev / "GlobalBound.v")
    assert done.returncode == 0, done.stdout + done.stderr
    return dev


def assumptions(coqc: str, dev: Path, where: Path, module: str, names: tuple[str, ...]) -> dict[str, set[str]]:
    """`Print Assumptions` of each name: the axioms (or admitted lemmas) it rests on."""
    probe = where / "Probe.v"
    head = f"From BlockCert Require Import {module}." if where == dev else f"Require Import {module}."
    probe.write_text(head + "\n" + "".join(f"Print Assumptions {n}.\n" for n in names), encoding="utf-8")
    extra = ["-Q", str(where), ""] if where != dev else []
    done = subprocess.run([coqc, "-Q", str(dev), "BlockCert", *extra, str(probe)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # each answer starts with "Axioms:" (then one unindented qualified name per axiom, its type indented)
    # or with "Closed under the global context"
    chunks: list[set[str]] = []
    for line in done.stdout.splitlines():
        if line.startswith(("Axioms:", "Closed under the global context")):
            chunks.append(set())
        elif line and not line[0].isspace():
            assert chunks, done.stdout
            chunks[-1].add(line.split(" :")[0].strip())
    assert len(chunks) == len(names), done.stdout
    return dict(zip(names, chunks))


# ---------------------------------------------------------------------------------------------------
# (a) the development
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_development_rests_only_on_the_real_number_axioms(coqc, coq_dev):
    found = assumptions(coqc, coq_dev, coq_dev, "GlobalBound", MAIN_THEOREMS)
    for name, axioms in found.items():
        assert axioms <= REAL_AXIOMS, (name, axioms - REAL_AXIOMS)
    assert found["global_bound"], "Theorem 1 is about R, so it must mention the real-number axioms"


def test_the_assumption_check_catches_an_admitted_lemma(coqc, tmp_path):
    """The check above can fail: admit one lemma of the development and it shows up."""
    text = (COQ_DEV / "GlobalBound.v").read_text(encoding="utf-8")
    proof = re.search(r"(Theorem delta_closed_form .*?Proof\.)(.*?)(Qed\.)", text, re.S)
    assert proof is not None
    shutil.copy(COQ_DEV / "GlobalBound.v", tmp_path / "GlobalBound.v")
    (tmp_path / "GlobalBound.v").write_text(text[:proof.start(2)] + "\nAdmitted." + text[proof.end(3):], encoding="utf-8")
    done = compile_coq(coqc, tmp_path, tmp_path / "GlobalBound.v")
    assert done.returncode == 0, done.stderr
    found = assumptions(coqc, tmp_path, tmp_path, "GlobalBound", ("global_bound",))
    assert {a.rsplit(".", 1)[-1] for a in found["global_bound"] - REAL_AXIOMS} == {"delta_closed_form"}


def test_a_broken_proof_does_not_compile(coqc, tmp_path):
    """Weakening the step of Appendix A (drop the Lipschitz hypothesis's use) breaks the build."""
    text = (COQ_DEV / "GlobalBound.v").read_text(encoding="utf-8")
    broken = text.replace("destruct (Hstep k ltac:(lia) Hprev) as [Hlip Heps].", "", 1)
    assert broken != text
    (tmp_path / "GlobalBound.v").write_text(broken, encoding="utf-8")
    assert compile_coq(coqc, tmp_path, tmp_path / "GlobalBound.v").returncode != 0


def test_lean_proof_compiles(tmp_path):
    """The Lean 4 / Mathlib version of Theorem 1 is checked only where a Lean toolchain exists."""
    lake = shutil.which("lake")
    if lake is None:
        pytest.skip("no Lean 4 toolchain on this machine: Lean and Mathlib are not installable from PyPI or Debian "
                    "here, so lean/GlobalBound.lean is NOT checked; the Coq development (lean/coq/GlobalBound.v) is "
                    "the proof that CI compiles")
    proc = subprocess.run([lake, "build"], cwd=LEAN, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------
# (b)–(d) instantiations from a small real run
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bounded_run(tmp_path_factory, byte_tokenizer) -> Path:
    model = make_model_dir(tmp_path_factory.mktemp("theorem") / "model", byte_tokenizer, layers=3)
    out = tmp_path_factory.mktemp("theorem-run") / "run"
    run(model, prompts="builtin:stress", out=out, bounds=True)
    stitch(out)
    return out


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def coq_constants(text: str, name: str) -> list[Fraction]:
    body = re.search(rf"Definition {name} : list Q := \[(.*?)\]%Q\.", text, re.S).group(1)
    return [Fraction(int(n), int(d)) for n, d in re.findall(r"\((\d+) # (\d+)\)", body)]


def lean_constants(text: str, name: str) -> list[Fraction]:
    body = re.search(rf"noncomputable def {name} : ℕ → ℝ\n(.*?)\n  \| _ => 0", text, re.S).group(1)
    out = []
    for k, (i, num, den) in enumerate(re.findall(r"  \| (\d+) => (\d+)(?: / (\d+))?", body)):
        assert int(i) == k
        out.append(Fraction(int(num), int(den or 1)))
    return out


def test_emitted_coq_instance_compiles_and_states_the_bound(coqc, coq_dev, bounded_run, tmp_path):
    target = tmp_path / "small_bound.v"
    done = cli("bound", str(bounded_run), "--emit", "coq", "--emit-out", str(target))
    assert done.returncode == 0, done.stderr
    assert f"coqc -Q " in done.stderr and str(target) in done.stderr
    text = target.read_text(encoding="utf-8")
    report = bound(bounded_run)
    inst = emit.instance(report)
    # exact constants: the certificate's epsilon_seq and the mixed variant's Lipschitz bounds, as binary rationals
    assert coq_constants(text, "eps_list") == list(inst.eps) == [Fraction(b.epsilon_seq) for b in report.blocks]
    assert coq_constants(text, "lip_list") == list(inst.lips)
    assert emit.horner(inst.eps, inst.lips) == report.sound.bound.exact <= inst.bound
    assert f"Definition n_blocks : nat := {report.n_blocks}." in text
    compiled = compile_coq(coqc, coq_dev, target)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    found = assumptions(coqc, coq_dev, tmp_path, "small_bound", ("blockcert_bound", "blockcert_bound_traced"))
    for axioms in found.values():
        assert axioms <= REAL_AXIOMS


def test_a_bound_below_the_sum_is_rejected(coqc, coq_dev, bounded_run, tmp_path):
    inst = emit.instance(bound(bounded_run))
    assert inst.exact > sum(inst.eps)  # here every L_i > 1: Σ ε_i is below Theorem 1's bound
    cases = {
        "tight": (inst.exact, True),  # the exact rational itself is provable (≤)
        "just_below": (inst.exact * (1 - Fraction(1, 10**40)), False),
        "sum_eps": (sum(inst.eps), False),  # the Σ ε_i heuristic is not a consequence of the certificates
    }
    for name, (value, ok) in cases.items():
        path = tmp_path / f"case_{name}.v"
        path.write_text(emit.coq_source(attrs.evolve(inst, bound=value), path), encoding="utf-8")
        done = compile_coq(coqc, coq_dev, path)
        assert (done.returncode == 0) == ok, (name, done.stdout + done.stderr)
        if not ok:
            assert "horner_check" in done.stderr or 'Unable to unify "true" with "false"' in done.stderr


def test_emitted_lean_instance_has_the_same_constants(bounded_run, tmp_path):
    coq, lean = tmp_path / "inst.v", tmp_path / "Inst.lean"
    for fmt, path in (("coq", coq), ("lean", lean)):
        done = cli("bound", str(bounded_run), "--emit", fmt, "--emit-out", str(path))
        assert done.returncode == 0, done.stderr
    c, l = coq.read_text(encoding="utf-8"), lean.read_text(encoding="utf-8")
    assert lean_constants(l, "eps") == coq_constants(c, "eps_list")
    assert lean_constants(l, "L") == coq_constants(c, "lip_list")
    assert len(lean_constants(l, "eps")) == 3
    bound_q = re.search(r"Definition bound_q : Q := \((\d+) # (\d+)\)%Q\.", c)
    lean_bound = re.search(r"theorem horner_le : delta eps L 3 ≤ \((\d+)(?: / (\d+))? : ℝ\)", l)
    assert Fraction(int(bound_q[1]), int(bound_q[2])) == Fraction(int(lean_bound[1]), int(lean_bound[2] or 1))
    assert "NOT machine-checked" in l
    assert not re.search(r"sorry|admit|native_decide|\baxiom\b", l)


def test_every_variant_reconstructs_composes_numbers(bounded_run):
    report = bound(bounded_run)
    for name in emit.VARIANTS:
        inst = emit.instance(report, name)
        v = next(x for x in report.variants if x.name == name)
        assert inst.exact == v.bound.exact and inst.bound >= inst.exact and inst.sound == v.sound


def test_emit_usage_errors_exit_2_with_one_line(bounded_run, tmp_path):
    cases = [
        ("--emit-out", str(tmp_path / "x.v")),
        ("--emit", "isabelle"),
        ("--emit", "coq", "--emit-out", str(tmp_path / "bad-name.v")),
        ("--emit", "coq", "--emit-out", str(tmp_path / "x.lean")),
        ("--emit", "coq", "--emit-out", str(tmp_path / "missing" / "x.v")),
        ("--emit", "coq", "--emit-out", str(bounded_run / "inside.v")),
        ("--emit", "coq", "--variant", "nope"),
        ("--variant", "analytic"),
    ]
    for args in cases:
        done = cli("bound", str(bounded_run), *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error:") and "Traceback" not in done.stderr, (args, done.stderr)
    assert not (bounded_run / "inside.v").exists()


def test_default_emit_path_is_the_working_directory(bounded_run, tmp_path):
    done = cli("bound", str(bounded_run), "--emit", "lean", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "BlockcertBound.lean").is_file()
    import json

    json.loads(done.stdout)  # --json output stays clean: the emit messages go to stderr

"""Theorem 1 instantiated for a proof assistant: ``blockcert bound OUT_DIR --emit coq|lean``.

The instantiation file states the global bound of one variant of a :class:`~blockcert.bounds.compose.BoundReport`
as a theorem about *any* models whose blocks satisfy the per-block hypotheses with the certificate's
constants, and proves it from the mechanised Theorem 1 (``lean/coq/GlobalBound.v``,
``lean/GlobalBound.lean``) plus a computation:

* ``ε_i`` (the block's ``epsilon_seq``, 0 for a block that is not stitched) and ``L_i`` (the variant's
  Lipschitz constant) are binary floats, so they are written as exact rationals ``numerator # denominator``;
* the stated bound is the variant's ``decimal`` (rounded up, so ≥ the exact Horner value) as an exact rational;
* Coq checks ``Σ_i ε_i Π_{j>i} L_j ≤ bound`` by evaluating Horner's rule on Q with ``vm_compute`` and carries
  it to R (``delta_le_of_check``); a bound below the exact value does not compile.

The Lean file has the same constants; it is not checked here (no Lean toolchain), see docs/theorem.md.
"""

from __future__ import annotations

import json
import re
import shlex
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts import records as R
from blockcert.artifacts.fsutil import atomic_write_text
from blockcert.artifacts.layout import MANIFEST
from blockcert.errors import UserError

FORMATS = ("coq", "lean")
VARIANTS = ("mixed", "analytic", "hybrid", "per-token-eps")
DEFAULT_FILE = {"coq": "blockcert_bound.v", "lean": "BlockcertBound.lean"}
_COQ_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@attrs.frozen
class Instance:
    """The numbers an instantiation file states: exact rationals, block 0 first."""

    eps: tuple[Fraction, ...]
    lips: tuple[Fraction, ...]
    lip_kinds: tuple[str, ...]  # "analytic" / "hybrid" per block
    exact: Fraction  # Σ_i ε_i Π_{j>i} L_j, exact
    bound: Fraction  # the stated bound (decimal rounded up); ≥ exact for a file that compiles
    decimal: str
    variant: str
    sound: bool
    label: str
    run: str
    model: str
    weights_sha256: str
    stitched: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.eps)


def horner(eps: tuple[Fraction, ...] | list[Fraction], lips: tuple[Fraction, ...] | list[Fraction]) -> Fraction:
    """δ_n with δ_0 = 0, δ_{i+1} = L_i δ_i + ε_i: the ``delta`` of the mechanised theorem."""
    acc = Fraction(0)
    for e, lip in zip(eps, lips, strict=True):
        acc = acc * lip + e
    return acc


def instance(report: Any, variant: str = "mixed") -> Instance:
    """The constants and bound of ``variant`` of a :class:`BoundReport`, as exact rationals."""
    if variant not in VARIANTS:
        raise UserError(f"unknown --variant {variant!r}", f"choose one of {', '.join(VARIANTS)}")
    v = next(x for x in report.variants if x.name == variant)
    blocks = report.blocks
    seq = variant != "per-token-eps"
    eps = tuple(Fraction(b.epsilon_seq if seq else b.epsilon_token) if b.stitched else Fraction(0) for b in blocks)
    if variant == "mixed":
        kinds = tuple(v.lips)
    elif variant == "hybrid":
        kinds = tuple("hybrid" if b.hybrid is not None else "analytic" for b in blocks)
    else:
        kinds = ("analytic",) * len(blocks)
    lips = tuple(Fraction(b.hybrid if k == "hybrid" else b.analytic) for b, k in zip(blocks, kinds, strict=True))
    exact = horner(eps, lips)
    if exact != v.bound.exact:  # the constants must be exactly those compose used
        raise RuntimeError(f"variant {variant}: reconstructed constants give {exact}, compose gave {v.bound.exact}")
    bound = Fraction(Decimal(v.bound.decimal))
    if bound < exact:
        raise RuntimeError(f"variant {variant}: decimal {v.bound.decimal} is below the exact bound")
    path = Path(report.root) / MANIFEST
    model = R.read(R.RunManifest, json.loads(path.read_text(encoding="utf-8")), str(path)).model
    return Instance(eps=eps, lips=lips, lip_kinds=kinds, exact=exact, bound=bound, decimal=v.bound.decimal,
                    variant=variant, sound=v.sound, label=v.label, run=str(report.root),
                    model=model.name, weights_sha256=model.weights_sha256,
                    stitched=tuple(report.stitched_blocks))


# ---------------------------------------------------------------------------------------------------
# Where the mechanised theorem lives, and how to check a file against it
# ---------------------------------------------------------------------------------------------------


def development_dir() -> Path | None:
    """``lean/coq`` of this checkout (the Coq development), or None outside a source checkout."""
    d = Path(__file__).resolve().parent.parent / "lean" / "coq"
    return d if (d / "GlobalBound.v").is_file() else None


def coq_command(path: Path, dev: Path | None = None) -> str:
    """The exact shell command that checks an emitted Coq file (compiles the development first)."""
    dev = dev or development_dir()
    if dev is None:
        d, main = "<blockcert checkout>/lean/coq", "<blockcert checkout>/lean/coq/GlobalBound.v"
    else:
        d, main = shlex.quote(str(dev)), shlex.quote(str(dev / "GlobalBound.v"))
    return f"coqc -Q {d} BlockCert {main} && coqc -Q {d} BlockCert {shlex.quote(str(path.absolute()))}"


def lean_command(path: Path) -> str:
    """The shell command that checks an emitted Lean file (needs Lean and Mathlib, see lean/lakefile.toml)."""
    dev = development_dir()
    lean = shlex.quote(str(dev.parent)) if dev is not None else "<blockcert checkout>/lean"
    return f"cd {lean} && lake exe cache get && lake build && lake env lean {shlex.quote(str(path.absolute()))}"


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def _comment_safe(text: str, closer: str) -> str:
    return text.replace(closer, closer[0] + " " + closer[1:])


def _header(inst: Instance, tool: str, closer: str) -> list[str]:
    from blockcert.bounds.compose import ranges

    stitched = ranges(inst.stitched) if inst.stitched else "none"
    lines = [
        f"Generated by `blockcert bound {inst.run} --emit {tool} --variant {inst.variant}`. Do not edit: regenerate.",
        f"Model {inst.model} (weights sha256 {inst.weights_sha256}), {inst.n} blocks, stitched: {stitched}.",
        f"Variant {inst.variant} ({'sound' if inst.sound else 'NOT a bound for this run'}): {inst.label}.",
        "eps_i: the block's epsilon_seq (sequence norm: Frobenius over the tokens), 0 for a block that is not",
        "stitched; L_i: the block's certified Lipschitz bound (" + ", ".join(
            f"{k} for {c}" for k, c in _kind_counts(inst.lip_kinds)) + "). Both are binary floats written exactly.",
        f"Stated bound: {inst.decimal} (rounded up; the exact Horner value is smaller or equal).",
        "The theorem is conditional: it holds for any models whose blocks satisfy the hypotheses with these",
        "constants. That the real model does (eps_i on other inputs, L_i on the regions, exact arithmetic) is",
        "what the certificates measure or certify, not what this file proves; see docs/theorem.md.",
    ]
    return [_comment_safe(line, closer) for line in lines]


def _kind_counts(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    from blockcert.bounds.compose import ranges

    out = []
    for kind in ("analytic", "hybrid"):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if idx:
            out.append((kind, ("block " if len(idx) == 1 else "blocks ") + ranges(idx)))
    return out


def _coq_q(q: Fraction) -> str:
    return f"({q.numerator} # {q.denominator})"


def coq_source(inst: Instance, path: Path | None = None) -> str:
    """A Coq file that states and proves the instance (``From BlockCert Require Import GlobalBound``);
    ``path``: where it will be written (for the check command in its header)."""
    n = inst.n
    eps = ";\n  ".join(f"(* {i} *) {_coq_q(e)}" for i, e in enumerate(inst.eps))
    lips = ";\n  ".join(f"(* {i} *) {_coq_q(x)}" for i, x in enumerate(inst.lips))
    head = "\n   ".join(_header(inst, "coq", "*)"))
    return f"""(* {head}
   Check: {_comment_safe(coq_command(path or Path("FILE.v")), "*)")} *)

From Coq Require Import List QArith Reals.
From BlockCert Require Import GlobalBound.
Import ListNotations.
Local Open Scope R_scope.

Definition n_blocks : nat := {n}.

(** eps_i, block 0 first *)
Definition eps_list : list Q := [
  {eps}
]%Q.

(** L_i, block 0 first *)
Definition lip_list : list Q := [
  {lips}
]%Q.

(** The stated bound, {inst.decimal} *)
Definition bound_q : Q := {_coq_q(inst.bound)}%Q.

Lemma lip_nonneg : forallb (Qle_bool 0) lip_list = true.
Proof. vm_compute. reflexivity. Qed.

(** Horner's rule on Q: Σ_i eps_i Π_(j>i) L_j <= bound_q, by computation. *)
Lemma horner_check : Qle_bool (deltaQ (qnth eps_list) (qnth lip_list) n_blocks) bound_q = true.
Proof. vm_compute. reflexivity. Qed.

(** Theorem 1 with these constants: every input, local soundness and Lipschitz everywhere. *)
Theorem blockcert_bound :
  forall (X : Type) (dist : X -> X -> R),
  (forall x, dist x x = 0) -> (forall x y z, dist x z <= dist x y + dist y z) ->
  forall B Bh : nat -> X -> X,
  (forall i x, (i < n_blocks)%nat -> dist (Bh i x) (B i x) <= rnth eps_list i) ->
  (forall i x y, (i < n_blocks)%nat -> dist (Bh i x) (Bh i y) <= rnth lip_list i * dist x y) ->
  forall x, dist (comp Bh n_blocks x) (comp B n_blocks x) <= Q2R bound_q.
Proof. exact (instance_global eps_list lip_list n_blocks bound_q lip_nonneg horner_check). Qed.

(** The empirical instantiation (paper §5.2): inputs from a traced set S, eps_i on the baseline
    trajectory only, L_i on regions Reg i that contain the baseline point and every point within the
    accumulated bound of it. *)
Theorem blockcert_bound_traced :
  forall (X : Type) (dist : X -> X -> R),
  (forall x, dist x x = 0) -> (forall x y z, dist x z <= dist x y + dist y z) ->
  forall (B Bh : nat -> X -> X) (S : X -> Prop) (Reg : nat -> X -> Prop),
  (forall x i, S x -> (i < n_blocks)%nat -> dist (Bh i (comp B i x)) (B i (comp B i x)) <= rnth eps_list i) ->
  (forall i y z, (i < n_blocks)%nat -> Reg i y -> Reg i z -> dist (Bh i y) (Bh i z) <= rnth lip_list i * dist y z) ->
  (forall x i, S x -> (i < n_blocks)%nat -> Reg i (comp B i x)) ->
  (forall x i y, S x -> (i < n_blocks)%nat -> dist y (comp B i x) <= delta (rnth eps_list) (rnth lip_list) i -> Reg i y) ->
  forall x, S x -> dist (comp Bh n_blocks x) (comp B n_blocks x) <= Q2R bound_q.
Proof. exact (instance_traced eps_list lip_list n_blocks bound_q lip_nonneg horner_check). Qed.
"""


def _lean_q(q: Fraction) -> str:
    return f"{q.numerator}" if q.denominator == 1 else f"{q.numerator} / {q.denominator}"


def _lean_fun(name: str, doc: str, values: tuple[Fraction, ...]) -> str:
    cases = "\n".join(f"  | {i} => {_lean_q(v)}" for i, v in enumerate(values))
    return f"/-- {doc} -/\nnoncomputable def {name} : ℕ → ℝ\n{cases}\n  | _ => 0\n"


def lean_source(inst: Instance, path: Path | None = None) -> str:
    """The same instance for ``lean/GlobalBound.lean``.  Not checked here: no Lean toolchain."""
    n = inst.n
    head = "\n".join(_header(inst, "lean", "-/"))
    bound = f"({_lean_q(inst.bound)} : ℝ)"
    return f"""/-
{head}
NOT machine-checked: no Lean toolchain can be installed where BlockCert's CI runs. CI checks the Coq
instantiation with the same constants (`--emit coq`). Check this file with Lean v4.18.0 + Mathlib v4.18.0:
  {_comment_safe(lean_command(path or Path("FILE.lean")), "-/")}
-/
import GlobalBound

namespace BlockCertInstance

open BlockCert

{_lean_fun("eps", "ε_i, block 0 first (exact binary rationals)", inst.eps)}
{_lean_fun("L", "L_i, block 0 first (exact binary rationals)", inst.lips)}
theorem L_nonneg : ∀ i, 0 ≤ L i := by
  intro i
  unfold L
  split <;> norm_num

/-- Horner's rule, evaluated exactly: `∑ ε_i ∏_(j>i) L_j ≤ {inst.decimal}`. -/
theorem horner_le : delta eps L {n} ≤ {bound} := by
  norm_num [delta_succ, eps, L]

/-- Theorem 1 with these constants. -/
theorem blockcert_bound {{X : Type*}} [SeminormedAddCommGroup X] (B Bh : ℕ → X → X)
    (heps : ∀ i < {n}, ∀ x, ‖Bh i x - B i x‖ ≤ eps i)
    (hlip : ∀ i < {n}, ∀ x y, ‖Bh i x - Bh i y‖ ≤ L i * ‖x - y‖) (x : X) :
    ‖comp Bh {n} x - comp B {n} x‖ ≤ {bound} :=
  (global_bound_delta B Bh eps L {n} (fun i _ => L_nonneg i) heps hlip x).trans horner_le

/-- The empirical instantiation (paper §5.2). -/
theorem blockcert_bound_traced {{X : Type*}} [SeminormedAddCommGroup X] (B Bh : ℕ → X → X)
    (S : Set X) (Reg : ℕ → Set X)
    (heps : ∀ x ∈ S, ∀ i < {n}, ‖Bh i (comp B i x) - B i (comp B i x)‖ ≤ eps i)
    (hlip : ∀ i < {n}, ∀ y ∈ Reg i, ∀ z ∈ Reg i, ‖Bh i y - Bh i z‖ ≤ L i * ‖y - z‖)
    (hbase : ∀ x ∈ S, ∀ i < {n}, comp B i x ∈ Reg i)
    (hball : ∀ x ∈ S, ∀ i < {n}, ∀ y, ‖y - comp B i x‖ ≤ delta eps L i → y ∈ Reg i) :
    ∀ x ∈ S, ‖comp Bh {n} x - comp B {n} x‖ ≤ {bound} := fun x hx =>
  (traced_bound_ball B Bh eps L {n} S Reg (fun i _ => L_nonneg i) heps hlip hbase hball x hx).trans horner_le

end BlockCertInstance
"""


@attrs.frozen
class Emitted:
    path: Path
    format: str
    instance: Instance
    command: str


def target(fmt: str, path: str | Path | None, run_dir: str | Path, variant: str = "mixed") -> Path:
    """Check the arguments of ``--emit`` before any work is done: the file ``emit`` will write."""
    if fmt not in FORMATS:
        raise UserError(f"unknown --emit format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    if variant not in VARIANTS:
        raise UserError(f"unknown --variant {variant!r}", f"choose one of {', '.join(VARIANTS)}")
    out = Path(path) if path is not None else Path.cwd() / DEFAULT_FILE[fmt]
    suffix = ".v" if fmt == "coq" else ".lean"
    if out.suffix != suffix:
        raise UserError(f"--emit-out {out}: a {fmt} file must end in {suffix}", f"e.g. --emit-out {DEFAULT_FILE[fmt]}")
    if fmt == "coq" and not _COQ_IDENT.match(out.stem):
        raise UserError(f"--emit-out {out}: {out.stem!r} is not a Coq module name",
                        "use letters, digits and _ only, starting with a letter, e.g. blockcert_bound.v")
    if not out.parent.is_dir():
        raise UserError(f"--emit-out {out}: directory {out.parent} does not exist", "create it first")
    root = Path(run_dir).resolve()
    if root in out.resolve().parents:
        raise UserError(f"--emit-out {out} is inside the run directory {run_dir}",
                        "write it elsewhere: `blockcert verify` refuses files that no certificate covers")
    return out


def emit(report: Any, fmt: str, path: str | Path | None = None, *, variant: str = "mixed") -> Emitted:
    """Write the ``fmt`` ("coq" or "lean") instantiation of ``report`` to ``path`` (default: in the current
    directory) and return it with the command that checks it."""
    out = target(fmt, path, report.root, variant)
    inst = instance(report, variant)
    command = coq_command(out) if fmt == "coq" else lean_command(out)
    atomic_write_text(out, coq_source(inst, out) if fmt == "coq" else lean_source(inst, out))
    return Emitted(out, fmt, inst, command)

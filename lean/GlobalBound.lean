/-
Theorem 1 of the BlockCert paper (global composition, §5.1 eq. (14), proof of Appendix A).

Written against Lean v4.18.0 and Mathlib v4.18.0 (see `lean-toolchain` and `lakefile.toml`); build with
`lake exe cache get && lake build`.  This file is NOT machine-checked by the repository's CI: no Lean
toolchain can be installed there.  CI checks the same development in Coq (`coq/GlobalBound.v`), theorem
for theorem; see `docs/theorem.md`.

Blocks `B i` (baseline) and `Bh i` (the paper's surrogate `B̂_i`) map a seminormed additive group `X` to
itself; `comp B n = B (n-1) ∘ ⋯ ∘ B 0`.  If every `Bh i` is `eps i`-close to `B i` and `L i`-Lipschitz, then
`‖comp Bh n x - comp B n x‖ ≤ ∑ i ∈ range n, eps i * ∏ j ∈ Ico (i+1) n, L j`.

* `global_bound` / `global_bound_delta`: Theorem 1 (closed form / Horner form `delta`).
* `theorem1`: the paper's hypotheses verbatim (both `B i` and `Bh i` Lipschitz; only `Bh i` is used).
* `global_bound_lipschitzWith`: the same with Mathlib's `LipschitzWith`.
* `global_bound_sum_eps`: the `∑ ε_i` corollary for `0 ≤ L i ≤ 1`.
* `traced_bound`, `traced_bound_ball`: the empirical instantiation of §5.2 — `eps i` only on the baseline
  trajectory of inputs from a traced set `S`, the Lipschitz property only on a region `Reg i`.
-/
import Mathlib

namespace BlockCert

section Defs

variable {X : Type*}

/-- `comp B n x = B (n-1) (⋯ (B 0 x))`: the first `n` blocks, block 0 first (paper eq. (11)–(12)). -/
def comp (B : ℕ → X → X) : ℕ → X → X
  | 0, x => x
  | n + 1, x => B n (comp B n x)

theorem comp_zero (B : ℕ → X → X) (x : X) : comp B 0 x = x := rfl

theorem comp_succ (B : ℕ → X → X) (n : ℕ) (x : X) : comp B (n + 1) x = B n (comp B n x) := rfl

end Defs

/-- Horner's rule: `delta 0 = 0`, `delta (n+1) = L n * delta n + eps n` (what `blockcert.bounds.compose` computes). -/
noncomputable def delta (eps L : ℕ → ℝ) : ℕ → ℝ
  | 0 => 0
  | n + 1 => L n * delta eps L n + eps n

@[simp] theorem delta_zero (eps L : ℕ → ℝ) : delta eps L 0 = 0 := rfl

theorem delta_succ (eps L : ℕ → ℝ) (n : ℕ) : delta eps L (n + 1) = L n * delta eps L n + eps n := rfl

/-- The Horner form equals the right-hand side of eq. (14). -/
theorem delta_eq_sum (eps L : ℕ → ℝ) (n : ℕ) :
    delta eps L n = ∑ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) n, L j) := by
  induction n with
  | zero => simp
  | succ n ih =>
    have h : ∀ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) (n + 1), L j) =
        L n * (eps i * (∏ j ∈ Finset.Ico (i + 1) n, L j)) := by
      intro i hi
      have hin : i + 1 ≤ n := Finset.mem_range.mp hi
      rw [Finset.prod_Ico_succ_top hin]
      ring
    calc delta eps L (n + 1) = L n * delta eps L n + eps n := delta_succ eps L n
      _ = L n * (∑ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) n, L j)) + eps n := by
          rw [ih]
      _ = (∑ i ∈ Finset.range n, L n * (eps i * (∏ j ∈ Finset.Ico (i + 1) n, L j))) + eps n := by
          rw [Finset.mul_sum]
      _ = (∑ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) (n + 1), L j)) + eps n := by
          rw [Finset.sum_congr rfl h]
      _ = ∑ i ∈ Finset.range (n + 1), eps i * (∏ j ∈ Finset.Ico (i + 1) (n + 1), L j) := by
          rw [Finset.sum_range_succ, Finset.Ico_self, Finset.prod_empty, mul_one]

theorem delta_nonneg (eps L : ℕ → ℝ) (heps : ∀ i, 0 ≤ eps i) (hL : ∀ i, 0 ≤ L i) :
    ∀ n, 0 ≤ delta eps L n := by
  intro n
  induction n with
  | zero => simp
  | succ n ih =>
    rw [delta_succ]
    have h := mul_nonneg (hL n) ih
    linarith [heps n]

/-- With `0 ≤ L i ≤ 1` the bound is at most `∑ ε_i`. -/
theorem delta_le_sum_eps (eps L : ℕ → ℝ) (heps : ∀ i, 0 ≤ eps i) (hL : ∀ i, 0 ≤ L i)
    (hL1 : ∀ i, L i ≤ 1) : ∀ n, delta eps L n ≤ ∑ i ∈ Finset.range n, eps i := by
  intro n
  induction n with
  | zero => simp
  | succ n ih =>
    rw [delta_succ, Finset.sum_range_succ]
    have h1 : L n * delta eps L n ≤ 1 * delta eps L n :=
      mul_le_mul_of_nonneg_right (hL1 n) (delta_nonneg eps L heps hL n)
    linarith

section Normed

variable {X : Type*} [SeminormedAddCommGroup X]

theorem norm_sub_le_via (a b c : X) : ‖a - c‖ ≤ ‖a - b‖ + ‖b - c‖ := by
  calc ‖a - c‖ = ‖(a - b) + (b - c)‖ := by congr 1; abel
    _ ≤ ‖a - b‖ + ‖b - c‖ := norm_add_le _ _

/-- Appendix A, one step at a time: with `x⁽ⁱ⁾ = comp B i x` and `x̂⁽ⁱ⁾ = comp Bh i x`,
`‖x̂⁽ⁱ⁺¹⁾ - x⁽ⁱ⁺¹⁾‖ ≤ ‖Bh i x̂⁽ⁱ⁾ - Bh i x⁽ⁱ⁾‖ + ‖Bh i x⁽ⁱ⁾ - B i x⁽ⁱ⁾‖ ≤ L i ‖x̂⁽ⁱ⁾ - x⁽ⁱ⁾‖ + eps i`.
The step's hypotheses may use the bound already established before block `i`. -/
theorem dev_le_delta (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ) (x : X)
    (hL : ∀ i < n, 0 ≤ L i)
    (hstep : ∀ i < n, ‖comp Bh i x - comp B i x‖ ≤ delta eps L i →
      ‖Bh i (comp Bh i x) - Bh i (comp B i x)‖ ≤ L i * ‖comp Bh i x - comp B i x‖ ∧
      ‖Bh i (comp B i x) - B i (comp B i x)‖ ≤ eps i) :
    ∀ k ≤ n, ‖comp Bh k x - comp B k x‖ ≤ delta eps L k := by
  intro k
  induction k with
  | zero => intro _; simp [comp_zero]
  | succ k ih =>
    intro hk
    have hkn : k < n := by omega
    have hprev := ih (by omega)
    obtain ⟨hlip, heps⟩ := hstep k hkn hprev
    have hmul : L k * ‖comp Bh k x - comp B k x‖ ≤ L k * delta eps L k :=
      mul_le_mul_of_nonneg_left hprev (hL k hkn)
    have htri := norm_sub_le_via (Bh k (comp Bh k x)) (Bh k (comp B k x)) (B k (comp B k x))
    rw [comp_succ, comp_succ, delta_succ]
    linarith

/-- Theorem 1 in Horner form. -/
theorem global_bound_delta (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ)
    (hL : ∀ i < n, 0 ≤ L i)
    (heps : ∀ i < n, ∀ x, ‖Bh i x - B i x‖ ≤ eps i)
    (hlip : ∀ i < n, ∀ x y, ‖Bh i x - Bh i y‖ ≤ L i * ‖x - y‖) (x : X) :
    ‖comp Bh n x - comp B n x‖ ≤ delta eps L n :=
  dev_le_delta B Bh eps L n x hL (fun i hi _ => ⟨hlip i hi _ _, heps i hi _⟩) n le_rfl

/-- **Theorem 1** (eq. (14)): `‖F̂ x - F x‖ ≤ ∑_{i<n} ε_i ∏_{i<j<n} L_j`. -/
theorem global_bound (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ)
    (hL : ∀ i < n, 0 ≤ L i)
    (heps : ∀ i < n, ∀ x, ‖Bh i x - B i x‖ ≤ eps i)
    (hlip : ∀ i < n, ∀ x y, ‖Bh i x - Bh i y‖ ≤ L i * ‖x - y‖) (x : X) :
    ‖comp Bh n x - comp B n x‖ ≤
      ∑ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) n, L j) := by
  calc ‖comp Bh n x - comp B n x‖ ≤ delta eps L n := global_bound_delta B Bh eps L n hL heps hlip x
    _ = _ := delta_eq_sum eps L n

/-- The paper's hypotheses verbatim: both `B i` and `Bh i` are `L i`-Lipschitz.  The hypothesis on
`B i` is not needed and is kept only to match §5.1. -/
theorem theorem1 (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ)
    (hL : ∀ i < n, 0 ≤ L i)
    (heps : ∀ i < n, ∀ x, ‖Bh i x - B i x‖ ≤ eps i)
    (_hlipB : ∀ i < n, ∀ x y, ‖B i x - B i y‖ ≤ L i * ‖x - y‖)
    (hlip : ∀ i < n, ∀ x y, ‖Bh i x - Bh i y‖ ≤ L i * ‖x - y‖) (x : X) :
    ‖comp Bh n x - comp B n x‖ ≤
      ∑ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) n, L j) :=
  global_bound B Bh eps L n hL heps hlip x

/-- Theorem 1 with Mathlib's `LipschitzWith` for the surrogates. -/
theorem global_bound_lipschitzWith (B Bh : ℕ → X → X) (eps : ℕ → ℝ) (K : ℕ → NNReal) (n : ℕ)
    (heps : ∀ i < n, ∀ x, ‖Bh i x - B i x‖ ≤ eps i)
    (hlip : ∀ i < n, LipschitzWith (K i) (Bh i)) (x : X) :
    ‖comp Bh n x - comp B n x‖ ≤
      ∑ i ∈ Finset.range n, eps i * (∏ j ∈ Finset.Ico (i + 1) n, (K j : ℝ)) := by
  apply global_bound B Bh eps (fun j => (K j : ℝ)) n (fun i _ => NNReal.coe_nonneg (K i)) heps
  intro i hi y z
  have h := (hlip i hi).dist_le_mul y z
  rw [dist_eq_norm, dist_eq_norm] at h
  exact h

/-- The `∑ ε_i` corollary (§5.2): non-expansive surrogates. -/
theorem global_bound_sum_eps (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ)
    (heps0 : ∀ i, 0 ≤ eps i) (hL : ∀ i, 0 ≤ L i) (hL1 : ∀ i, L i ≤ 1)
    (heps : ∀ i < n, ∀ x, ‖Bh i x - B i x‖ ≤ eps i)
    (hlip : ∀ i < n, ∀ x y, ‖Bh i x - Bh i y‖ ≤ L i * ‖x - y‖) (x : X) :
    ‖comp Bh n x - comp B n x‖ ≤ ∑ i ∈ Finset.range n, eps i :=
  (global_bound_delta B Bh eps L n (fun i _ => hL i) heps hlip x).trans
    (delta_le_sum_eps eps L heps0 hL hL1 n)

/-- The empirical instantiation (§5.2): inputs from a traced set `S`; `eps i` holds on the baseline
trajectory `comp B i x` of those inputs only (what a block certificate measures) and `Bh i` is
`L i`-Lipschitz on a region `Reg i` (what a certified Lipschitz bound gives) containing both
trajectories. -/
theorem traced_bound (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ) (S : Set X) (Reg : ℕ → Set X)
    (hL : ∀ i < n, 0 ≤ L i)
    (heps : ∀ x ∈ S, ∀ i < n, ‖Bh i (comp B i x) - B i (comp B i x)‖ ≤ eps i)
    (hlip : ∀ i < n, ∀ y ∈ Reg i, ∀ z ∈ Reg i, ‖Bh i y - Bh i z‖ ≤ L i * ‖y - z‖)
    (hbase : ∀ x ∈ S, ∀ i < n, comp B i x ∈ Reg i)
    (hstitched : ∀ x ∈ S, ∀ i < n, comp Bh i x ∈ Reg i) :
    ∀ x ∈ S, ‖comp Bh n x - comp B n x‖ ≤ delta eps L n := by
  intro x hx
  exact dev_le_delta B Bh eps L n x hL
    (fun i hi _ => ⟨hlip i hi _ (hstitched x hx i hi) _ (hbase x hx i hi), heps x hx i hi⟩) n le_rfl

/-- The same, with the stitched trajectory's membership discharged by the bound itself: `Reg i`
contains every point within `delta eps L i` of the baseline point `comp B i x` (what
`blockcert bound` checks for the hybrid constants). -/
theorem traced_bound_ball (B Bh : ℕ → X → X) (eps L : ℕ → ℝ) (n : ℕ) (S : Set X) (Reg : ℕ → Set X)
    (hL : ∀ i < n, 0 ≤ L i)
    (heps : ∀ x ∈ S, ∀ i < n, ‖Bh i (comp B i x) - B i (comp B i x)‖ ≤ eps i)
    (hlip : ∀ i < n, ∀ y ∈ Reg i, ∀ z ∈ Reg i, ‖Bh i y - Bh i z‖ ≤ L i * ‖y - z‖)
    (hbase : ∀ x ∈ S, ∀ i < n, comp B i x ∈ Reg i)
    (hball : ∀ x ∈ S, ∀ i < n, ∀ y, ‖y - comp B i x‖ ≤ delta eps L i → y ∈ Reg i) :
    ∀ x ∈ S, ‖comp Bh n x - comp B n x‖ ≤ delta eps L n := by
  intro x hx
  exact dev_le_delta B Bh eps L n x hL
    (fun i hi hprev => ⟨hlip i hi _ (hball x hx i hi _ hprev) _ (hbase x hx i hi), heps x hx i hi⟩)
    n le_rfl

end Normed

end BlockCert

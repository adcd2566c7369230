(** * Theorem 1 of the BlockCert paper (global composition), in Coq's standard library

    Paper §5.1, eq. (14), and the proof of Appendix A.  Blocks [B i] (baseline) and [Bh i]
    (surrogate, the paper's B̂_i) map a space [X] to itself; the full models are the compositions
    [comp B n = B (n-1) ∘ … ∘ B 0] and [comp Bh n].  If every surrogate is [eps i]-close to its
    block and [L i]-Lipschitz, then for every [x]

        dist (comp Bh n x) (comp B n x) <= Σ_{i<n} eps i · Π_{i<j<n} L j.

    The space is abstract: any [dist] with [dist x x = 0] and the triangle inequality (a
    pseudometric without symmetry).  [NormedAbGroup] below instantiates it with [‖a − b‖] on a
    normed additive group, which is the paper's setting (e.g. R^{T×d} with the Frobenius norm).

    Only the surrogate's Lipschitz constant is used (Appendix A adds and subtracts
    [Bh i (x^(i))]); [theorem1] restates the paper's version, which also assumes [B i] Lipschitz.
    [traced_bound] and [traced_bound_ball] are the empirical instantiation of §5.2: [eps i] is
    needed only at the baseline trajectory [x^(i) = comp B i x] of the inputs of a set [S], and the
    Lipschitz property only on a region containing both trajectories.

    The bound is computed by Horner's rule, [delta (S k) = L k * delta k + eps k]
    ([delta_closed_form] proves it equals the closed form); [blockcert.bounds.compose] computes exactly
    this recursion.  The last section lets a generated instantiation file check the numeric bound
    by computation on Q ([vm_compute]) and carry it to R.

    Check: [coqc -Q lean/coq BlockCert lean/coq/GlobalBound.v] (Coq 8.16, stdlib only). *)

From Coq Require Import Reals Lra Lia List Bool QArith Qreals.
Import ListNotations.
Local Open Scope R_scope.

(** ** Models and the bound *)

(** [comp B n x] is [B (n-1) (… (B 0 x))]: the first [n] blocks, block 0 first (paper eq. 11–12). *)
Fixpoint comp {X : Type} (B : nat -> X -> X) (n : nat) (x : X) : X :=
  match n with
  | O => x
  | S k => B k (comp B k x)
  end.

(** Horner's rule: [delta 0 = 0], [delta (k+1) = L k · delta k + eps k]. *)
Fixpoint delta (eps L : nat -> R) (n : nat) : R :=
  match n with
  | O => 0
  | S k => L k * delta eps L k + eps k
  end.

(** [sum_lt f n = Σ_{i<n} f i] and [prod_lt f n = Π_{j<n} f j]. *)
Fixpoint sum_lt (f : nat -> R) (n : nat) : R :=
  match n with
  | O => 0
  | S k => sum_lt f k + f k
  end.

Fixpoint prod_lt (f : nat -> R) (n : nat) : R :=
  match n with
  | O => 1
  | S k => prod_lt f k * f k
  end.

(** [tail_prod L i n = Π_{i<j<n} L j]. *)
Definition tail_prod (L : nat -> R) (i n : nat) : R :=
  prod_lt (fun j => if Nat.ltb i j then L j else 1) n.

(** The right-hand side of eq. (14). *)
Definition closed_form (eps L : nat -> R) (n : nat) : R :=
  sum_lt (fun i => eps i * tail_prod L i n) n.

(** ** Horner form = closed form *)

Lemma sum_lt_ext (f g : nat -> R) (n : nat) :
  (forall i, (i < n)%nat -> f i = g i) -> sum_lt f n = sum_lt g n.
Proof.
  induction n as [|n IH]; intros H; simpl; [reflexivity|].
  rewrite IH by (intros; apply H; lia). rewrite (H n) by lia. reflexivity.
Qed.

Lemma sum_lt_scale (c : R) (f : nat -> R) (n : nat) :
  sum_lt (fun i => c * f i) n = c * sum_lt f n.
Proof. induction n as [|n IH]; simpl; [ring|]. rewrite IH. ring. Qed.

Lemma tail_prod_succ (L : nat -> R) (i n : nat) :
  (i < n)%nat -> tail_prod L i (S n) = tail_prod L i n * L n.
Proof.
  intros H. unfold tail_prod. simpl.
  replace (Nat.ltb i n) with true by (symmetry; apply Nat.ltb_lt; exact H). reflexivity.
Qed.

Lemma tail_prod_empty (L : nat -> R) (i m : nat) : (m <= S i)%nat -> tail_prod L i m = 1.
Proof.
  unfold tail_prod. induction m as [|m IH]; intros H; simpl; [reflexivity|].
  rewrite IH by lia.
  replace (Nat.ltb i m) with false by (symmetry; apply Nat.ltb_ge; lia). ring.
Qed.

Theorem delta_closed_form (eps L : nat -> R) (n : nat) : delta eps L n = closed_form eps L n.
Proof.
  unfold closed_form. induction n as [|n IH]; simpl; [reflexivity|].
  rewrite IH, (tail_prod_empty L n (S n)) by lia.
  rewrite (sum_lt_ext (fun i => eps i * tail_prod L i (S n)) (fun i => L n * (eps i * tail_prod L i n)) n).
  - rewrite sum_lt_scale. ring.
  - intros i Hi. rewrite tail_prod_succ by exact Hi. ring.
Qed.

Lemma delta_nonneg (eps L : nat -> R) (n : nat) :
  (forall i, (i < n)%nat -> 0 <= eps i) -> (forall i, (i < n)%nat -> 0 <= L i) -> 0 <= delta eps L n.
Proof.
  induction n as [|n IH]; intros He HL; simpl; [lra|].
  assert (0 <= delta eps L n) by (apply IH; intros; [apply He | apply HL]; lia).
  assert (0 <= L n) by (apply HL; lia). assert (0 <= eps n) by (apply He; lia).
  assert (0 <= L n * delta eps L n) by (apply Rmult_le_pos; assumption). lra.
Qed.

(** The Σ ε_i special case: with every [0 <= L i <= 1] the bound is at most [Σ_{i<n} eps i]. *)
Theorem delta_le_sum_eps (eps L : nat -> R) (n : nat) :
  (forall i, (i < n)%nat -> 0 <= eps i) -> (forall i, (i < n)%nat -> 0 <= L i <= 1) ->
  delta eps L n <= sum_lt eps n.
Proof.
  induction n as [|n IH]; intros He HL; simpl; [lra|].
  assert (delta eps L n <= sum_lt eps n) by (apply IH; intros; [apply He | apply HL]; lia).
  assert (0 <= delta eps L n) by (apply delta_nonneg; intros; [apply He | apply HL]; lia).
  destruct (HL n) as [HL0 HL1]; [lia|].
  assert (L n * delta eps L n <= 1 * delta eps L n) by (apply Rmult_le_compat_r; assumption). lra.
Qed.

(** ** Theorem 1 on a pseudometric space *)

Section Composition.

Variables (X : Type) (dist : X -> X -> R).
Hypothesis dist_self : forall x, dist x x = 0.
Hypothesis dist_triangle : forall x y z, dist x z <= dist x y + dist y z.

Variables (B Bh : nat -> X -> X) (eps L : nat -> R) (n : nat).

(** One step of Appendix A: with [x^(i) = comp B i x] and [x̂^(i) = comp Bh i x],
    [dist x̂^(i+1) x^(i+1) <= dist (Bh i x̂^(i)) (Bh i x^(i)) + dist (Bh i x^(i)) (B i x^(i))
                          <= L i · dist x̂^(i) x^(i) + eps i].
    The step's hypotheses may use the bound already established for [dist x̂^(i) x^(i)]. *)
Lemma deviation_le_delta (x : X) :
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall i, (i < n)%nat -> dist (comp Bh i x) (comp B i x) <= delta eps L i ->
     dist (Bh i (comp Bh i x)) (Bh i (comp B i x)) <= L i * dist (comp Bh i x) (comp B i x) /\
     dist (Bh i (comp B i x)) (B i (comp B i x)) <= eps i) ->
  forall k, (k <= n)%nat -> dist (comp Bh k x) (comp B k x) <= delta eps L k.
Proof.
  intros HL Hstep k. induction k as [|k IH]; intros Hk; simpl.
  - rewrite dist_self. lra.
  - assert (Hprev : dist (comp Bh k x) (comp B k x) <= delta eps L k) by (apply IH; lia).
    destruct (Hstep k ltac:(lia) Hprev) as [Hlip Heps].
    assert (L k * dist (comp Bh k x) (comp B k x) <= L k * delta eps L k)
      by (apply Rmult_le_compat_l; [apply HL; lia | exact Hprev]).
    pose proof (dist_triangle (Bh k (comp Bh k x)) (Bh k (comp B k x)) (B k (comp B k x))).
    lra.
Qed.

(** Theorem 1 in Horner form: [eps i] bounds the surrogate's error everywhere and [Bh i] is
    [L i]-Lipschitz everywhere (for the blocks [i < n]). *)
Theorem global_bound_delta :
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall i x, (i < n)%nat -> dist (Bh i x) (B i x) <= eps i) ->
  (forall i x y, (i < n)%nat -> dist (Bh i x) (Bh i y) <= L i * dist x y) ->
  forall x, dist (comp Bh n x) (comp B n x) <= delta eps L n.
Proof.
  intros HL Heps Hlip x. apply (deviation_le_delta x HL); [|lia].
  intros i Hi _. split; [apply Hlip | apply Heps]; exact Hi.
Qed.

(** Theorem 1, eq. (14): [dist (F̂ x) (F x) <= Σ_{i<n} eps i · Π_{i<j<n} L j]. *)
Theorem global_bound :
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall i x, (i < n)%nat -> dist (Bh i x) (B i x) <= eps i) ->
  (forall i x y, (i < n)%nat -> dist (Bh i x) (Bh i y) <= L i * dist x y) ->
  forall x, dist (comp Bh n x) (comp B n x) <= sum_lt (fun i => eps i * tail_prod L i n) n.
Proof.
  intros HL Heps Hlip x. pose proof (delta_closed_form eps L n) as E. unfold closed_form in E.
  rewrite <- E. apply global_bound_delta; assumption.
Qed.

(** The paper's statement verbatim: both [B i] and [Bh i] are [L i]-Lipschitz.  The hypothesis on
    [B i] is not needed; it is kept here only to match §5.1. *)
Theorem theorem1 :
  (forall i, (i < n)%nat -> 0 <= eps i) ->
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall i x, (i < n)%nat -> dist (Bh i x) (B i x) <= eps i) ->
  (forall i x y, (i < n)%nat -> dist (B i x) (B i y) <= L i * dist x y) ->
  (forall i x y, (i < n)%nat -> dist (Bh i x) (Bh i y) <= L i * dist x y) ->
  forall x, dist (comp Bh n x) (comp B n x) <= sum_lt (fun i => eps i * tail_prod L i n) n.
Proof. intros _ HL Heps _ Hlip. apply global_bound; assumption. Qed.

(** The Σ ε_i corollary (§5.2): non-expansive surrogates, [0 <= L i <= 1]. *)
Corollary global_bound_sum_eps :
  (forall i, (i < n)%nat -> 0 <= eps i) ->
  (forall i, (i < n)%nat -> 0 <= L i <= 1) ->
  (forall i x, (i < n)%nat -> dist (Bh i x) (B i x) <= eps i) ->
  (forall i x y, (i < n)%nat -> dist (Bh i x) (Bh i y) <= L i * dist x y) ->
  forall x, dist (comp Bh n x) (comp B n x) <= sum_lt eps n.
Proof.
  intros He HL Heps Hlip x.
  apply Rle_trans with (delta eps L n).
  - apply global_bound_delta; [intros i Hi; apply HL, Hi | assumption | assumption].
  - apply delta_le_sum_eps; assumption.
Qed.

(** Empirical instantiation (§5.2).  Inputs come from a traced set [S]; [eps i] is known only on the
    baseline trajectory [comp B i x] of those inputs (what a block certificate measures), and
    [Bh i] is [L i]-Lipschitz only on a region [Reg i] (what a certified Lipschitz bound gives).
    Both trajectories must lie in the region. *)
Theorem traced_bound (S : X -> Prop) (Reg : nat -> X -> Prop) :
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall x i, S x -> (i < n)%nat -> dist (Bh i (comp B i x)) (B i (comp B i x)) <= eps i) ->
  (forall i y z, (i < n)%nat -> Reg i y -> Reg i z -> dist (Bh i y) (Bh i z) <= L i * dist y z) ->
  (forall x i, S x -> (i < n)%nat -> Reg i (comp B i x)) ->
  (forall x i, S x -> (i < n)%nat -> Reg i (comp Bh i x)) ->
  forall x, S x -> dist (comp Bh n x) (comp B n x) <= delta eps L n.
Proof.
  intros HL Heps Hlip Hbase Hstitched x Hx. apply (deviation_le_delta x HL); [|lia].
  intros i Hi _. split.
  - apply Hlip; [exact Hi | apply Hstitched | apply Hbase]; assumption.
  - apply Heps; assumption.
Qed.

(** The same, with the stitched trajectory's membership discharged by the bound itself: it suffices
    that [Reg i] contains every point within [delta eps L i] of the baseline point [comp B i x]
    (what [blockcert bound] checks for the hybrid constants: the accumulated bound stays inside the
    block's hybrid radius). *)
Theorem traced_bound_ball (S : X -> Prop) (Reg : nat -> X -> Prop) :
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall x i, S x -> (i < n)%nat -> dist (Bh i (comp B i x)) (B i (comp B i x)) <= eps i) ->
  (forall i y z, (i < n)%nat -> Reg i y -> Reg i z -> dist (Bh i y) (Bh i z) <= L i * dist y z) ->
  (forall x i, S x -> (i < n)%nat -> Reg i (comp B i x)) ->
  (forall x i y, S x -> (i < n)%nat -> dist y (comp B i x) <= delta eps L i -> Reg i y) ->
  forall x, S x -> dist (comp Bh n x) (comp B n x) <= delta eps L n.
Proof.
  intros HL Heps Hlip Hbase Hball x Hx. apply (deviation_le_delta x HL); [|lia].
  intros i Hi Hprev. split.
  - apply Hlip; [exact Hi | apply (Hball x i); assumption | apply Hbase; assumption].
  - apply Heps; assumption.
Qed.

End Composition.

(** ** Normed additive groups: the paper's [‖F̂(x) − F(x)‖] *)

(** A normed additive commutative group, by its laws.  Nonnegativity and homogeneity of the norm
    are not needed, so seminormed groups and every normed space (R^{T×d} with the Frobenius norm,
    the sequence norm of [blockcert bound]) are instances. *)
Record NormedAbGroup := {
  carrier :> Type;
  add : carrier -> carrier -> carrier;
  opp : carrier -> carrier;
  zero : carrier;
  norm : carrier -> R;
  add_assoc : forall a b c, add a (add b c) = add (add a b) c;
  add_comm : forall a b, add a b = add b a;
  add_zero : forall a, add a zero = a;
  add_opp : forall a, add a (opp a) = zero;
  norm_zero : norm zero = 0;
  norm_triangle : forall a b, norm (add a b) <= norm a + norm b
}.

Definition sub (G : NormedAbGroup) (a b : G) : G := add G a (opp G b).

Lemma norm_sub_self (G : NormedAbGroup) (a : G) : norm G (sub G a a) = 0.
Proof. unfold sub. rewrite add_opp. apply norm_zero. Qed.

Lemma norm_sub_triangle (G : NormedAbGroup) (a b c : G) :
  norm G (sub G a c) <= norm G (sub G a b) + norm G (sub G b c).
Proof.
  unfold sub.
  replace (add G a (opp G c)) with (add G (add G a (opp G b)) (add G b (opp G c))).
  - apply norm_triangle.
  - rewrite <- (add_assoc G a), (add_assoc G (opp G b)), (add_comm G (opp G b) b), add_opp.
    rewrite (add_comm G (zero G)), add_zero. reflexivity.
Qed.

(** Theorem 1 in the paper's notation: [‖F̂(x) − F(x)‖ <= Σ_{i<n} ε_i Π_{i<j<n} L_j]. *)
Theorem global_bound_normed (G : NormedAbGroup) (B Bh : nat -> G -> G) (eps L : nat -> R) (n : nat) :
  (forall i, (i < n)%nat -> 0 <= L i) ->
  (forall i x, (i < n)%nat -> norm G (sub G (Bh i x) (B i x)) <= eps i) ->
  (forall i x y, (i < n)%nat -> norm G (sub G (Bh i x) (Bh i y)) <= L i * norm G (sub G x y)) ->
  forall x, norm G (sub G (comp Bh n x) (comp B n x)) <= sum_lt (fun i => eps i * tail_prod L i n) n.
Proof.
  apply (global_bound G (fun a b => norm G (sub G a b))).
  - apply norm_sub_self.
  - apply norm_sub_triangle.
Qed.

(** The hypotheses are satisfiable: R with [|·|] is a normed additive group. *)
Definition R_normed : NormedAbGroup.
Proof.
  refine {| carrier := R; add := Rplus; opp := Ropp; zero := 0; norm := Rabs |};
    intros; try ring.
  - apply Rabs_R0.
  - apply Rabs_triang.
Defined.

(** ** Support for generated instantiations ([blockcert bound --emit coq]) *)

(** The constants of a certificate are exact rationals: block [i] reads entry [i] of a list. *)
Definition qnth (l : list Q) (i : nat) : Q := nth i l 0%Q.
Definition rnth (l : list Q) (i : nat) : R := Q2R (qnth l i).

(** Horner's rule on Q, evaluated by [vm_compute]. *)
Fixpoint deltaQ (eps L : nat -> Q) (n : nat) : Q :=
  match n with
  | O => 0%Q
  | S k => (L k * deltaQ eps L k + eps k)%Q
  end.

Lemma delta_Q2R (e l : nat -> Q) (n : nat) :
  delta (fun i => Q2R (e i)) (fun i => Q2R (l i)) n = Q2R (deltaQ e l n).
Proof.
  induction n as [|n IH]; simpl.
  - unfold Q2R. simpl. field.
  - rewrite Q2R_plus, Q2R_mult, IH. reflexivity.
Qed.

Lemma rnth_nonneg (l : list Q) : forallb (Qle_bool 0) l = true -> forall i, 0 <= rnth l i.
Proof.
  intros H i. unfold rnth, qnth.
  replace 0 with (Q2R 0) by (unfold Q2R; simpl; field).
  apply Qle_Rle, Qle_bool_imp_le.
  destruct (nth_in_or_default i l 0%Q) as [Hin | ->].
  - exact (proj1 (forallb_forall _ l) H _ Hin).
  - reflexivity.
Qed.

(** The numeric step of an instantiation: a successful computation of [deltaQ <= b] on Q bounds
    the real Horner value. *)
Lemma delta_le_of_check (el ll : list Q) (n : nat) (b : Q) :
  Qle_bool (deltaQ (qnth el) (qnth ll) n) b = true -> delta (rnth el) (rnth ll) n <= Q2R b.
Proof.
  intros H. unfold rnth. rewrite delta_Q2R. apply Qle_Rle, Qle_bool_imp_le, H.
Qed.

(** Theorem 1 with the constants of a certificate: holds whenever [vm_compute] checks the two
    boolean side conditions. *)
Theorem instance_global (el ll : list Q) (n : nat) (b : Q) :
  forallb (Qle_bool 0) ll = true ->
  Qle_bool (deltaQ (qnth el) (qnth ll) n) b = true ->
  forall (X : Type) (dist : X -> X -> R),
  (forall x, dist x x = 0) -> (forall x y z, dist x z <= dist x y + dist y z) ->
  forall B Bh : nat -> X -> X,
  (forall i x, (i < n)%nat -> dist (Bh i x) (B i x) <= rnth el i) ->
  (forall i x y, (i < n)%nat -> dist (Bh i x) (Bh i y) <= rnth ll i * dist x y) ->
  forall x, dist (comp Bh n x) (comp B n x) <= Q2R b.
Proof.
  intros Hnn Hle X dist Hself Htri B Bh Heps Hlip x.
  apply Rle_trans with (delta (rnth el) (rnth ll) n).
  - apply (global_bound_delta X dist Hself Htri); [intros; apply rnth_nonneg, Hnn | assumption | assumption].
  - apply delta_le_of_check, Hle.
Qed.

(** The empirical instantiation with the constants of a certificate ([traced_bound_ball]). *)
Theorem instance_traced (el ll : list Q) (n : nat) (b : Q) :
  forallb (Qle_bool 0) ll = true ->
  Qle_bool (deltaQ (qnth el) (qnth ll) n) b = true ->
  forall (X : Type) (dist : X -> X -> R),
  (forall x, dist x x = 0) -> (forall x y z, dist x z <= dist x y + dist y z) ->
  forall (B Bh : nat -> X -> X) (S : X -> Prop) (Reg : nat -> X -> Prop),
  (forall x i, S x -> (i < n)%nat -> dist (Bh i (comp B i x)) (B i (comp B i x)) <= rnth el i) ->
  (forall i y z, (i < n)%nat -> Reg i y -> Reg i z -> dist (Bh i y) (Bh i z) <= rnth ll i * dist y z) ->
  (forall x i, S x -> (i < n)%nat -> Reg i (comp B i x)) ->
  (forall x i y, S x -> (i < n)%nat -> dist y (comp B i x) <= delta (rnth el) (rnth ll) i -> Reg i y) ->
  forall x, S x -> dist (comp Bh n x) (comp B n x) <= Q2R b.
Proof.
  intros Hnn Hle X dist Hself Htri B Bh S Reg Heps Hlip Hbase Hball x Hx.
  apply Rle_trans with (delta (rnth el) (rnth ll) n).
  - apply (traced_bound_ball X dist Hself Htri B Bh (rnth el) (rnth ll) n S Reg);
      [intros; apply rnth_nonneg, Hnn | assumption ..].
  - apply delta_le_of_check, Hle.
Qed.

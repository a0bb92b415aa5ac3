"""Anti-spoofing (countermeasure, CM) metrics exactly as the ASVspoof challenges define them: DET curve, EER, min t-DCF.

The DET curve and the EER follow the official ASVspoof 2019 scoring code (``compute_det_curve``, ``compute_eer``):
every score is a threshold, scores are sorted with a stable sort and bona fide before spoof, and the EER is the mean of
the miss and false-alarm rates where they are closest. The tandem detection cost function (t-DCF) is the "legacy"
one of the ASVspoof 2019 evaluation plan (Kinnunen et al., "t-DCF: a detection cost function for the tandem
assessment of spoofing countermeasures and automatic speaker verification", Odyssey 2018; ASVspoof 2019 evaluation
plan, section on the t-DCF), with its cost model as the default. Higher scores mean *more bona fide* throughout.

`SpoofMetrics` keeps every score (list states gathered by concatenation), so under DDP the curve, EER and t-DCF are
those of the whole set, not an average over processes; the arithmetic lives in the pure numpy functions beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import norm
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

BONAFIDE, SPOOF = 1, 0  # label values; the class index of the hard decisions too
NO_ATTACK = -1  # attack index stored for rows given without one (and meaningless for bona fide rows)


# ---------------------------------------------------------------------------------------------- score-level maths
def _check_scores(bonafide_scores: np.ndarray, spoof_scores: np.ndarray, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Both score sets as flat float64 arrays; ValueError if one is empty or holds a NaN or an infinity."""
    out = []
    for name, scores in (("bonafide_scores", bonafide_scores), ("spoof_scores", spoof_scores)):
        array = np.asarray(scores, dtype=np.float64).reshape(-1)
        if array.size == 0:
            raise ValueError(f"{caller}: {name} is empty; need at least one bona fide and one spoof score")
        if not np.isfinite(array).all():
            raise ValueError(f"{caller}: {name} holds {int((~np.isfinite(array)).sum())} non-finite score(s)")
        out.append(array)
    return out[0], out[1]


def det_curve(bonafide_scores: np.ndarray, spoof_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates of the countermeasure at every threshold, as ASVspoof's ``compute_det_curve``.

    All n scores are sorted (mergesort, stable, bona fide listed first, so within a tie the bona fide are passed
    first: the pessimistic order the official code uses). At the i-th sorted score t, P_miss(t) is the share of
    bona fide scores at or below t (rejected) and P_fa(t) the share of spoof scores above t (accepted). The curve
    starts at (P_miss, P_fa) = (0, 1) with a threshold 0.001 below the lowest score and ends at (1, 0).

    Returns:
        (p_miss, p_fa, thresholds), each of n + 1 float64 values, thresholds non-decreasing.
    """
    bonafide, spoof = _check_scores(bonafide_scores, spoof_scores, "det_curve")
    scores = np.concatenate([bonafide, spoof])
    labels = np.concatenate([np.full(bonafide.size, BONAFIDE), np.full(spoof.size, SPOOF)])
    order = np.argsort(scores, kind="mergesort")
    bonafide_at_or_below = np.cumsum(labels[order])  # integer counts: the rates are exact quotients
    spoof_above = spoof.size - (np.arange(1, scores.size + 1) - bonafide_at_or_below)
    p_miss = np.concatenate([[0.0], bonafide_at_or_below / bonafide.size])
    p_fa = np.concatenate([[1.0], spoof_above / spoof.size])
    thresholds = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    return p_miss, p_fa, thresholds


def compute_eer(bonafide_scores: np.ndarray, spoof_scores: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold, as ASVspoof's ``compute_eer``.

    The DET point where |P_miss − P_fa| is smallest (the first such point); the EER is the mean of the two rates
    there, the threshold is that point's score (a rejected bona fide scores at or below it).
    """
    p_miss, p_fa, thresholds = det_curve(bonafide_scores, spoof_scores)
    i = int(np.argmin(np.abs(p_miss - p_fa)))
    return float((p_miss[i] + p_fa[i]) / 2), float(thresholds[i])


def roc_auc(bonafide_scores: np.ndarray, spoof_scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random bona fide scores above a random spoof, ties = 1/2.

    Exact (the Mann-Whitney count in integers): for each bona fide score, the spoof scores below it count 1 and
    those equal to it 1/2.
    """
    bonafide, spoof = _check_scores(bonafide_scores, spoof_scores, "roc_auc")
    spoof = np.sort(spoof)
    below = np.searchsorted(spoof, bonafide, side="left").sum()  # spoof < bona fide
    at_or_below = np.searchsorted(spoof, bonafide, side="right").sum()  # spoof <= bona fide
    return float((int(below) + int(at_or_below)) / (2 * bonafide.size * spoof.size))


# --------------------------------------------------------------------------------------------------------- t-DCF
@dataclass(frozen=True)
class TDCFCostModel:
    """Priors and costs of the tandem (ASV + CM) system; defaults are the ASVspoof 2019 evaluation plan's.

    Attributes:
        p_spoof: prior of a spoofing attack.
        p_tar: prior of a target (genuine, same-speaker) trial.
        p_non: prior of a zero-effort non-target trial. The three priors must sum to 1.
        c_miss_asv: cost of the ASV rejecting a target.
        c_fa_asv: cost of the ASV accepting a non-target.
        c_miss_cm: cost of the CM rejecting a bona fide trial.
        c_fa_cm: cost of the CM accepting a spoof.
    """

    p_spoof: float = 0.05
    p_tar: float = 0.9405
    p_non: float = 0.0095
    c_miss_asv: float = 1.0
    c_fa_asv: float = 10.0
    c_miss_cm: float = 1.0
    c_fa_cm: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TDCFCostModel: {f.name} must be finite and >= 0, got {value}")
        for name in ("p_spoof", "p_tar", "p_non"):
            if getattr(self, name) > 1:
                raise ValueError(f"TDCFCostModel: {name} is a prior and must be <= 1, got {getattr(self, name)}")
        total = self.p_tar + self.p_non + self.p_spoof
        if abs(total - 1) > 1e-6:
            raise ValueError(f"TDCFCostModel: p_tar + p_non + p_spoof must be 1 (within 1e-6), got {total}")


@dataclass(frozen=True)
class ASVErrorRates:
    """Error rates of the automatic speaker verification (ASV) system the countermeasure is in tandem with.

    Compute them with `asv_error_rates` from ASV scores when there are some. The defaults stand for the case with
    none: an ideal ASV that never misses a target (p_miss = 0) nor accepts a zero-effort impostor (p_fa = 0), and
    accepts every spoof (p_miss_spoof = 0), the worst case for the countermeasure, which alone must stop the spoofs.
    With the 2019 cost model this gives C1 = p_tar · c_miss_cm = 0.9405 and C2 = c_fa_cm · p_spoof = 0.5, so the
    normalised t-DCF is (p_tar · c_miss_cm · P_miss_cm + c_fa_cm · p_spoof · P_fa_cm) / min(C1, C2)
    = 1.881 · P_miss_cm + P_fa_cm.

    Attributes:
        p_miss: share of target trials the ASV rejects.
        p_fa: share of non-target (zero-effort impostor) trials the ASV accepts.
        p_miss_spoof: share of spoof trials the ASV rejects.
    """

    p_miss: float = 0.0
    p_fa: float = 0.0
    p_miss_spoof: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"ASVErrorRates: {f.name} is a rate and must be in [0, 1], got {value}")


def asv_error_rates(target_scores: np.ndarray, nontarget_scores: np.ndarray, spoof_scores: np.ndarray) -> ASVErrorRates:
    """ASV error rates at the ASV's own EER threshold, as ASVspoof's ``obtain_asv_error_rates``.

    The threshold t is `compute_eer(target, nontarget)`'s. Then p_fa = share of non-targets with score >= t (the
    official code accepts at equality), p_miss = share of targets below t, p_miss_spoof = share of spoofs below t.
    """
    target, nontarget = _check_scores(target_scores, nontarget_scores, "asv_error_rates")
    _, threshold = compute_eer(target, nontarget)
    spoof = np.asarray(spoof_scores, dtype=np.float64).reshape(-1)
    if spoof.size == 0 or not np.isfinite(spoof).all():
        raise ValueError("asv_error_rates: spoof_scores must be non-empty and finite (the ASV scores of spoofs)")
    return ASVErrorRates(
        p_miss=float(np.mean(target < threshold)),
        p_fa=float(np.mean(nontarget >= threshold)),
        p_miss_spoof=float(np.mean(spoof < threshold)),
    )


def tdcf_weights(asv: ASVErrorRates, cost: TDCFCostModel) -> tuple[float, float]:
    """The weights (C1, C2) of the CM miss and false-alarm rates in the 2019 t-DCF.

    C1 = p_tar · (c_miss_cm − c_miss_asv · P_miss_asv) − p_non · c_fa_asv · P_fa_asv (a bona fide rejected by the CM
    that the ASV would have handled right), C2 = c_fa_cm · p_spoof · (1 − P_miss_spoof_asv) (a spoof the CM lets
    through and the ASV accepts). Both must be positive for the normalised t-DCF to exist.
    """
    c1 = cost.p_tar * (cost.c_miss_cm - cost.c_miss_asv * asv.p_miss) - cost.p_non * cost.c_fa_asv * asv.p_fa
    c2 = cost.c_fa_cm * cost.p_spoof * (1 - asv.p_miss_spoof)
    if c1 <= 0:
        raise ValueError(
            f"t-DCF: C1 = {c1:.6g} <= 0 with ASV p_miss = {asv.p_miss}, p_fa = {asv.p_fa}: the ASV misses or accepts "
            "so much that a CM miss costs nothing; check the ASV error rates"
        )
    if c2 <= 0:
        raise ValueError(
            f"t-DCF: C2 = {c2:.6g} <= 0 with ASV p_miss_spoof = {asv.p_miss_spoof}: the ASV rejects every spoof, so a "
            "CM false alarm costs nothing; check the ASV error rates"
        )
    return c1, c2


def tdcf_curve(
    bonafide_scores: np.ndarray,
    spoof_scores: np.ndarray,
    asv: ASVErrorRates = ASVErrorRates(),
    cost: TDCFCostModel = TDCFCostModel(),
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised t-DCF at every CM threshold of `det_curve`: (C1 · P_miss_cm + C2 · P_fa_cm) / min(C1, C2).

    Returns:
        (tdcf, thresholds), each of n + 1 float64 values.
    """
    c1, c2 = tdcf_weights(asv, cost)
    p_miss, p_fa, thresholds = det_curve(bonafide_scores, spoof_scores)
    return (c1 * p_miss + c2 * p_fa) / min(c1, c2), thresholds


def compute_min_tdcf(
    bonafide_scores: np.ndarray,
    spoof_scores: np.ndarray,
    asv: ASVErrorRates = ASVErrorRates(),
    cost: TDCFCostModel = TDCFCostModel(),
) -> float:
    """Minimum normalised t-DCF over the CM thresholds (ASVspoof 2019's "min t-DCF"; Kinnunen et al. 2018).

    0 is a perfect countermeasure; 1 is no better than a CM that accepts or rejects everything. With the default
    `ASVErrorRates` (no ASV scores: an ideal ASV that accepts every spoof) it is min over thresholds of
    1.881 · P_miss_cm + P_fa_cm. ValueError if C1 or C2 (`tdcf_weights`) is not positive.
    """
    tdcf, _ = tdcf_curve(bonafide_scores, spoof_scores, asv, cost)
    return float(tdcf.min())


# ----------------------------------------------------------------------------------------------------------- plot
DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999)
DET_CLIP = 5e-4  # rates are clipped to [DET_CLIP, 1 - DET_CLIP] before the probit, which is infinite at 0 and 1


def _probit(p: np.ndarray | float) -> np.ndarray:
    """Normal deviate of a rate, clipped away from 0 and 1."""
    return norm.ppf(np.clip(p, DET_CLIP, 1 - DET_CLIP))


def det_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "DET") -> Figure:
    """DET curves on normal-deviate axes, one line per entry, the EER point of each marked.

    Args:
        curves: name (e.g. ``"all"``, ``"A05"``) -> (bonafide_scores, spoof_scores), as `SpoofMetrics.det_scores()`
            returns; each curve comes from `det_curve` and its EER from `compute_eer`.
        title: the axes title.

    Returns:
        A `matplotlib.figure.Figure` (no pyplot, so no global state and no GUI backend): x = false-alarm rate (spoof
        accepted), y = miss rate (bona fide rejected), both in %, the legend giving each EER. Ready for TensorBoard's
        ``add_figure``.
    """
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for name, (bonafide, spoof) in curves.items():
        try:
            p_miss, p_fa, _ = det_curve(bonafide, spoof)
            eer, _ = compute_eer(bonafide, spoof)
        except ValueError as error:
            raise ValueError(f"det_figure: curve {name!r}: {error}") from error
        (line,) = ax.plot(_probit(p_fa), _probit(p_miss), label=f"{name} (EER {100 * eer:.2f}%)", linewidth=1.2)
        ax.scatter([_probit(eer)], [_probit(eer)], color=line.get_color(), marker="o", s=36, edgecolors="k", zorder=3)
    ticks = _probit(np.array(DET_TICKS))
    labels = [f"{100 * p:g}" for p in DET_TICKS]
    limits = (_probit(DET_CLIP), _probit(1 - DET_CLIP))
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("False alarm rate: spoof accepted (%)")
    ax.set_ylabel("Miss rate: bona fide rejected (%)")
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=8, loc="upper right")
    return fig


# ---------------------------------------------------------------------------------------------------------- metric
class SpoofMetrics(Metric):
    """EER, min t-DCF and AUROC of countermeasure scores, pooled over every update of a stage (and every process).

    `update(scores, labels, attacks=None, preds=None)`:

    - scores (b,) bona fide score (higher = more bona fide, e.g. the bona fide logit or log-probability);
    - labels (b,) 1 = bona fide, 0 = spoof;
    - attacks (b,) index into `attack_ids` of each row's attack (ignored for bona fide rows; rows without one are
      left out of the per-attack EERs);
    - preds (b,) hard decisions, 1 = bona fide (e.g. the argmax of two logits), optional.

    `compute()` returns a flat dict of float tensors: ``eer``, ``eer_threshold``, ``min_tdcf`` (with the `asv`
    rates and the ASVspoof 2019 cost model), ``auroc`` (NaN while only one class has been seen); with
    ``per_attack=True`` ``eer_<attack id>`` for every attack seen in a spoof row (all bona fide scores against that
    attack's spoofs); once preds were given ``accuracy``, ``recall_<class>`` for each class present in the labels and
    ``pred_share_<class>`` for each class (names from `class_names`, lower case), the share of decisions naming it.

    Every score is kept (cat states), so under DDP the values are those of the whole set. Each process must see at
    least one row before a synced compute (as with Lightning's padding DistributedSampler).
    `bonafide_spoof_scores()` and `det_scores()` give the scores themselves, for `det_figure`.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        attack_ids: Sequence[str] = (),
        class_names: Sequence[str] = ("spoof", "bonafide"),
        asv: ASVErrorRates = ASVErrorRates(),
        per_attack: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(attack_ids, str):
            raise ValueError(f"SpoofMetrics: attack_ids must be a sequence of ids, got the string {attack_ids!r}")
        self.attack_ids = tuple(str(a) for a in attack_ids)
        if len(set(self.attack_ids)) != len(self.attack_ids):
            raise ValueError(f"SpoofMetrics: attack_ids must be unique, got {self.attack_ids}")
        if "threshold" in self.attack_ids:  # its key eer_threshold is taken by the EER threshold
            raise ValueError("SpoofMetrics: 'threshold' cannot be an attack id (eer_threshold is the EER's threshold)")
        self.class_names = tuple(str(c).lower() for c in class_names)
        if len(self.class_names) != 2:
            raise ValueError(f"SpoofMetrics: class_names must name (spoof, bonafide), got {class_names}")
        if not isinstance(asv, ASVErrorRates):
            raise ValueError(f"SpoofMetrics: asv must be an ASVErrorRates, got {type(asv).__name__}")
        tdcf_weights(asv, TDCFCostModel())  # fail here, not at the first compute, if C1 or C2 <= 0
        self.asv = asv
        self.per_attack = per_attack
        self.add_state("scores", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")
        self.add_state("attacks", [], dist_reduce_fx="cat")
        self.add_state("confmat", torch.zeros(2, 2, dtype=torch.long), dist_reduce_fx="sum")  # true x predicted

    def update(
        self, scores: Tensor, labels: Tensor, attacks: Tensor | None = None, preds: Tensor | None = None
    ) -> None:
        b = scores.shape[0] if scores.ndim == 1 else -1
        if b < 0:
            raise ValueError(f"SpoofMetrics.update: scores must be (b,), got shape {tuple(scores.shape)}")
        if attacks is None:
            attacks = torch.full((b,), NO_ATTACK, dtype=torch.long, device=scores.device)
        given = {"labels": labels, "attacks": attacks} | ({} if preds is None else {"preds": preds})
        for name, value in given.items():
            if tuple(value.shape) != (b,):
                raise ValueError(f"SpoofMetrics.update: {name} has shape {tuple(value.shape)}, expected ({b},)")
        if not torch.isfinite(scores).all():
            raise ValueError("SpoofMetrics.update: scores hold NaN or infinite values")
        for name, value, low, high in (("labels", labels, 0, 1), ("preds", preds, 0, 1)):
            if value is not None and b and (int(value.min()) < low or int(value.max()) > high):
                raise ValueError(f"SpoofMetrics.update: {name} must be 0 (spoof) or 1 (bona fide)")
        if b and (int(attacks.min()) < NO_ATTACK or int(attacks.max()) >= len(self.attack_ids)):
            raise ValueError(f"SpoofMetrics.update: attacks must index attack_ids (0..{len(self.attack_ids) - 1})")
        self.scores.append(scores.detach().double())
        self.labels.append(labels.detach().long())
        self.attacks.append(attacks.detach().long())
        if preds is not None:
            self.confmat += torch.bincount(labels.long() * 2 + preds.long(), minlength=4).reshape(2, 2)

    def compute(self) -> dict[str, Tensor]:
        scores, labels, attacks = self._arrays()
        bonafide, spoof = scores[labels == BONAFIDE], scores[labels == SPOOF]
        device = self.confmat.device
        out: dict[str, Tensor] = {}
        both = bonafide.size > 0 and spoof.size > 0
        eer, threshold = compute_eer(bonafide, spoof) if both else (math.nan, math.nan)
        values = {
            "eer": eer,
            "eer_threshold": threshold,
            "min_tdcf": compute_min_tdcf(bonafide, spoof, self.asv) if both else math.nan,
            "auroc": roc_auc(bonafide, spoof) if both else math.nan,
        }
        if self.per_attack:
            for index in np.unique(attacks[(labels == SPOOF) & (attacks != NO_ATTACK)]):
                attack_spoof = scores[(labels == SPOOF) & (attacks == index)]
                eer_attack = compute_eer(bonafide, attack_spoof)[0] if bonafide.size else math.nan
                values[f"eer_{self.attack_ids[index]}"] = eer_attack
        out.update({k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in values.items()})
        out.update(self._decision_scores())
        return out

    def _decision_scores(self) -> dict[str, Tensor]:
        """Accuracy, recall per class present and prediction share per class, from the hard-decision counts."""
        cm = self.confmat.double()
        total = cm.sum()
        if total == 0:
            return {}
        support, predicted = cm.sum(1), cm.sum(0)
        out = {"accuracy": (cm.trace() / total).float()}
        for i, name in enumerate(self.class_names):
            if support[i] > 0:
                out[f"recall_{name}"] = (cm[i, i] / support[i]).float()
        for i, name in enumerate(self.class_names):
            out[f"pred_share_{name}"] = (predicted[i] / total).float()
        return out

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores float64, labels, attacks) of every row seen, as numpy (empty arrays before any update)."""
        if isinstance(self.scores, list) and not self.scores:  # a tensor once synced (cat of every process)
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return tuple(dim_zero_cat(s).cpu().numpy() for s in (self.scores, self.labels, self.attacks))

    def _synced_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`_arrays()` over every process (as `compute()` syncs), restoring the local state afterwards."""
        if self._is_synced:  # already inside a sync (e.g. called from compute()): the state is the gathered one
            return self._arrays()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return self._arrays()

    def bonafide_spoof_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(bonafide_scores, spoof_scores), float64 numpy, of every row seen by every process (a collective call)."""
        scores, labels, _ = self._synced_arrays()
        return scores[labels == BONAFIDE], scores[labels == SPOOF]

    def det_scores(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The input of `det_figure`: ``"all"`` -> (bonafide, spoof), and with ``per_attack`` each attack seen ->
        (every bona fide, that attack's spoofs). Empty while a class is missing. A collective call under DDP."""
        scores, labels, attacks = self._synced_arrays()
        bonafide, spoof = scores[labels == BONAFIDE], scores[labels == SPOOF]
        if bonafide.size == 0 or spoof.size == 0:
            return {}
        out = {"all": (bonafide, spoof)}
        if self.per_attack:
            for index in np.unique(attacks[(labels == SPOOF) & (attacks != NO_ATTACK)]):
                out[self.attack_ids[index]] = (bonafide, scores[(labels == SPOOF) & (attacks == index)])
        return out

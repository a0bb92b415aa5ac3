"""Anti-spoofing metrics (abr_lab/metrics/spoof.py) against hand-computed values and against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from abr_lab.metrics import (
    ASVErrorRates,
    SpoofMetrics,
    TDCFCostModel,
    asv_error_rates,
    compute_eer,
    compute_min_tdcf,
    det_curve,
    det_figure,
    roc_auc,
)
from abr_lab.metrics.spoof import tdcf_weights

BONAFIDE = [0.9, 0.8, 0.3]
SPOOF = [0.1, 0.2, 0.7]
# Sorted: 0.1 s, 0.2 s, 0.3 b, 0.7 s, 0.8 b, 0.9 b. At each threshold t (first one 0.1 - 0.001):
#   t        0.099  0.1   0.2   0.3   0.7   0.8   0.9
#   P_miss   0      0     0     1/3   1/3   2/3   1      (bona fide at or below t)
#   P_fa     1      2/3   1/3   1/3   0     0     0      (spoof above t)
#   |diff|   1      2/3   1/3   0     1/3   2/3   1   -> EER = (1/3 + 1/3) / 2 = 1/3 at t = 0.3
# AUROC: 0.9 and 0.8 beat all three spoofs, 0.3 beats two of them -> 8/9.
# Default t-DCF = 1.881 P_miss + P_fa: 1, 2/3, 1/3, 0.960, 0.627, 1.254, 1.881 -> min 1/3 (at t = 0.2).


def test_det_curve_by_hand():
    p_miss, p_fa, thresholds = det_curve(np.array(BONAFIDE), np.array(SPOOF))
    np.testing.assert_allclose(p_miss, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(p_fa, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    np.testing.assert_allclose(thresholds, [0.099, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9])


def test_eer_auroc_min_tdcf_by_hand():
    eer, threshold = compute_eer(BONAFIDE, SPOOF)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.3)
    assert roc_auc(BONAFIDE, SPOOF) == pytest.approx(8 / 9)
    assert compute_min_tdcf(BONAFIDE, SPOOF) == pytest.approx(1 / 3)


def test_min_tdcf_default_asv_weights_misses_by_1881():
    # Sorted: 0.1 b, 0.15 s, 0.2 s, 0.3 s, 0.4 s, 0.5 s, 0.6 b, 0.7 b, 0.8 b, 0.9 b.
    #   (P_miss, P_fa): (0, 1), (.2, 1), (.2, .8), (.2, .6), (.2, .4), (.2, .2), (.2, 0), (.4, 0), ...
    #   1.881 P_miss + P_fa: 1, 1.376, 1.176, 0.976, 0.776, 0.576, 0.3762, 0.7524, ... -> min 0.3762 (at t = 0.5)
    #   EER: |P_miss - P_fa| = 0 at (.2, .2) -> 0.2
    bonafide, spoof = [0.9, 0.8, 0.7, 0.6, 0.1], [0.5, 0.4, 0.3, 0.2, 0.15]
    assert compute_min_tdcf(bonafide, spoof) == pytest.approx(1.881 * 0.2)
    assert compute_eer(bonafide, spoof) == pytest.approx((0.2, 0.4))
    c1, c2 = tdcf_weights(ASVErrorRates(), TDCFCostModel())
    assert (c1, c2) == pytest.approx((0.9405, 0.5))
    assert c1 / min(c1, c2) == pytest.approx(1.881)


def test_min_tdcf_non_default_asv_against_formula():
    asv, cost = ASVErrorRates(p_miss=0.1, p_fa=0.05, p_miss_spoof=0.4), TDCFCostModel()
    # C1 = 0.9405 (1 - 0.1) - 0.0095 · 10 · 0.05 = 0.8417; C2 = 10 · 0.05 · (1 - 0.4) = 0.3
    c1, c2 = 0.9405 * 0.9 - 0.0095 * 10 * 0.05, 10 * 0.05 * 0.6
    assert tdcf_weights(asv, cost) == pytest.approx((c1, c2))
    p_miss = np.array([0, 0, 0, 1, 1, 2, 3]) / 3  # the DET points of BONAFIDE / SPOOF (table at the top)
    p_fa = np.array([3, 2, 1, 1, 0, 0, 0]) / 3
    expected = np.min((c1 * p_miss + c2 * p_fa) / min(c1, c2))
    assert compute_min_tdcf(BONAFIDE, SPOOF, asv, cost) == pytest.approx(expected)
    # A cost model of its own: the weights follow every field.
    cost = TDCFCostModel(p_spoof=0.2, p_tar=0.7, p_non=0.1, c_miss_asv=2, c_fa_asv=3, c_miss_cm=4, c_fa_cm=5)
    c1, c2 = 0.7 * (4 - 2 * 0.1) - 0.1 * 3 * 0.05, 5 * 0.2 * 0.6
    expected = np.min((c1 * p_miss + c2 * p_fa) / min(c1, c2))
    assert compute_min_tdcf(BONAFIDE, SPOOF, asv, cost) == pytest.approx(expected)


def test_perfect_separation():
    bonafide, spoof = [0.6, 0.8, 0.9], [0.1, 0.2, 0.5]
    assert compute_eer(bonafide, spoof)[0] == 0
    assert compute_min_tdcf(bonafide, spoof) == 0
    assert roc_auc(bonafide, spoof) == 1


def test_interleaved_reversed_and_tied():
    # Interleaved (one distribution): P_miss 0, .5, .5, 1, 1 vs P_fa 1, 1, .5, .5, 0 -> EER 0.5.
    assert compute_eer([1.0, 3.0], [2.0, 4.0])[0] == 0.5
    assert roc_auc([1.0, 3.0], [2.0, 4.0]) == 0.25
    # Reversed: every bona fide is missed before any spoof is rejected -> EER 1, AUROC 0.
    assert compute_eer([0.1, 0.2], [0.8, 0.9])[0] == 1
    assert roc_auc([0.1, 0.2], [0.8, 0.9]) == 0
    # All tied: the official stable sort passes bona fide first (pessimistic) -> same curve as reversed, EER 1,
    # while AUROC counts each tie as 1/2.
    p_miss, p_fa, _ = det_curve([0.5, 0.5], [0.5, 0.5])
    np.testing.assert_allclose(p_miss, [0, 0.5, 1, 1, 1])
    np.testing.assert_allclose(p_fa, [1, 1, 1, 0.5, 0])
    assert compute_eer([0.5, 0.5], [0.5, 0.5])[0] == 1
    assert roc_auc([0.5, 0.5], [0.5, 0.5]) == 0.5


def test_roc_auc_ties_against_sklearn():
    # (0.5 vs 0.5) 1/2 + (0.5 vs 0.2) 1, twice -> 3/4
    assert roc_auc([0.5, 0.5], [0.5, 0.2]) == 0.75
    rng = np.random.default_rng(0)
    bonafide, spoof = rng.integers(0, 6, 200).astype(float), rng.integers(0, 5, 150).astype(float)  # many ties
    labels = np.r_[np.ones(bonafide.size), np.zeros(spoof.size)]
    assert roc_auc(bonafide, spoof) == pytest.approx(roc_auc_score(labels, np.r_[bonafide, spoof]), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_eer_against_sklearn_roc(seed):
    rng = np.random.default_rng(seed)
    bonafide, spoof = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.2, 200)
    labels = np.r_[np.ones(bonafide.size), np.zeros(spoof.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[bonafide, spoof], drop_intermediate=False)
    fnr = 1 - tpr
    i = np.argmin(np.abs(fnr - fpr))
    eer, threshold = compute_eer(bonafide, spoof)
    assert eer == pytest.approx((fnr[i] + fpr[i]) / 2, abs=1 / spoof.size)
    # At the threshold, the rates are the ones it names: bona fide at or below are missed, spoof above accepted.
    p_miss, p_fa = np.mean(bonafide <= threshold), np.mean(spoof > threshold)
    assert eer == pytest.approx((p_miss + p_fa) / 2)


def test_score_validation():
    with pytest.raises(ValueError, match="bonafide_scores is empty"):
        compute_eer([], [0.1])
    with pytest.raises(ValueError, match="spoof_scores is empty"):
        det_curve([0.1], np.array([]))
    with pytest.raises(ValueError, match="spoof_scores holds 1 non-finite"):
        compute_eer([0.1, 0.2], [0.3, math.nan])
    with pytest.raises(ValueError, match="bonafide_scores holds 1 non-finite"):
        compute_min_tdcf([math.inf], [0.3])


def test_cost_model_validation():
    TDCFCostModel(p_spoof=0.1, p_tar=0.8, p_non=0.1 + 5e-7)  # within 1e-6
    with pytest.raises(ValueError, match="must be 1"):
        TDCFCostModel(p_spoof=0.1, p_tar=0.8, p_non=0.2)
    with pytest.raises(ValueError, match="c_fa_cm must be finite and >= 0"):
        TDCFCostModel(c_fa_cm=-1)
    with pytest.raises(ValueError, match="p_miss_spoof is a rate"):
        ASVErrorRates(p_miss_spoof=1.5)


def test_non_positive_weights_raise():
    with pytest.raises(ValueError, match=r"C1 = .* p_miss = 1.0, p_fa = 0.5"):
        compute_min_tdcf(BONAFIDE, SPOOF, ASVErrorRates(p_miss=1.0, p_fa=0.5))
    with pytest.raises(ValueError, match=r"C2 = 0 <= 0 with ASV p_miss_spoof = 1.0"):
        compute_min_tdcf(BONAFIDE, SPOOF, ASVErrorRates(p_miss_spoof=1.0))
    with pytest.raises(ValueError, match="C2"):
        SpoofMetrics(asv=ASVErrorRates(p_miss_spoof=1.0))


def test_asv_error_rates_by_hand():
    # Sorted ASV scores: 0 n, 1 n, 1.5 n, 2 t, 2.5 n, 3 t, 4 t, 5 t. P_miss 0 0 0 0 .25 .25 .5 .75 1,
    # P_fa 1 .75 .5 .25 .25 0 0 0 0 -> EER point at t = 2. Then P_miss = targets < 2 = 0, P_fa = non-targets >= 2 =
    # 1/4, P_miss_spoof = spoofs < 2 = 1/3.
    rates = asv_error_rates([2, 3, 4, 5], [0, 1, 2.5, 1.5], [1, 3, 2])
    assert rates == pytest.approx(ASVErrorRates(p_miss=0, p_fa=0.25, p_miss_spoof=1 / 3))
    # A non-target at the threshold counts as accepted (>=, as the official code): EER threshold 2 here.
    rates = asv_error_rates([2, 3], [1, 2], [0.0])
    assert (rates.p_miss, rates.p_fa, rates.p_miss_spoof) == (0, 0.5, 1)
    with pytest.raises(ValueError, match="spoof_scores must be non-empty"):
        asv_error_rates([2, 3], [1, 2], [])


def random_batches(seed: int = 0, n: int = 40):
    """Two batches of scores with labels, attack indices (0..2) and hard decisions."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(2):
        labels = torch.randint(0, 2, (n,), generator=g)
        scores = torch.randn(n, generator=g) + 1.5 * labels
        attacks = torch.randint(0, 3, (n,), generator=g)
        preds = (scores > 0.7).long()
        batches.append((scores, labels, attacks, preds))
    return batches


def test_spoof_metrics_equals_functions_on_concatenation():
    metric = SpoofMetrics(attack_ids=("A01", "A02", "A03"), per_attack=True)
    batches = random_batches()
    for scores, labels, attacks, preds in batches:
        metric.update(scores, labels, attacks, preds)
    out = metric.compute()
    scores, labels, attacks, preds = (torch.cat(x).numpy() for x in zip(*batches, strict=True))
    bonafide, spoof = scores[labels == 1].astype(np.float64), scores[labels == 0].astype(np.float64)
    eer, threshold = compute_eer(bonafide, spoof)
    assert out["eer"].item() == pytest.approx(eer)
    assert out["eer_threshold"].item() == pytest.approx(threshold, rel=1e-6)
    assert out["min_tdcf"].item() == pytest.approx(compute_min_tdcf(bonafide, spoof), rel=1e-6)
    assert out["auroc"].item() == pytest.approx(roc_auc(bonafide, spoof), rel=1e-6)
    for index, attack in enumerate(("A01", "A02", "A03")):
        expected = compute_eer(bonafide, scores[(labels == 0) & (attacks == index)])[0]
        assert out[f"eer_{attack}"].item() == pytest.approx(expected)
    assert out["accuracy"].item() == pytest.approx(np.mean(preds == labels))
    assert out["recall_spoof"].item() == pytest.approx(np.mean(preds[labels == 0] == 0))
    assert out["recall_bonafide"].item() == pytest.approx(np.mean(preds[labels == 1] == 1))
    assert out["pred_share_spoof"].item() == pytest.approx(np.mean(preds == 0))
    assert out["pred_share_bonafide"].item() == pytest.approx(np.mean(preds == 1))
    got_bonafide, got_spoof = metric.bonafide_spoof_scores()
    np.testing.assert_array_equal(got_bonafide, bonafide)
    np.testing.assert_array_equal(got_spoof, spoof)
    assert list(metric.det_scores()) == ["all", "A01", "A02", "A03"]


def test_spoof_metrics_keys():
    metric = SpoofMetrics(attack_ids=("A01", "A02", "A03"), per_attack=True)
    scores = torch.tensor([0.9, 0.8, 0.1, 0.2])
    metric.update(scores, torch.tensor([1, 1, 0, 0]), torch.tensor([-1, -1, 2, 2]))
    assert set(metric.compute()) == {"eer", "eer_threshold", "min_tdcf", "auroc", "eer_A03"}  # no preds, one attack
    metric = SpoofMetrics()
    metric.update(scores, torch.tensor([1, 1, 0, 0]))
    assert set(metric.compute()) == {"eer", "eer_threshold", "min_tdcf", "auroc"}


def test_spoof_metrics_preds_by_hand():
    # labels 1 1 1 0 0, preds 1 0 1 1 1: bona fide recall 2/3, spoof recall 0, 4 of 5 decisions say bona fide.
    metric = SpoofMetrics()
    labels, preds = torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 0, 1, 1, 1])
    metric.update(torch.tensor([0.9, 0.1, 0.8, 0.7, 0.6]), labels, preds=preds)
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(2 / 5)
    assert out["recall_bonafide"].item() == pytest.approx(2 / 3)
    assert out["recall_spoof"].item() == 0
    assert out["pred_share_bonafide"].item() == pytest.approx(4 / 5)
    assert out["pred_share_spoof"].item() == pytest.approx(1 / 5)


def test_spoof_metrics_one_class_gives_nan():
    metric = SpoofMetrics(attack_ids=("A01",), per_attack=True)
    metric.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 0]), torch.tensor([0, 0]), preds=torch.tensor([0, 1]))
    out = metric.compute()
    for key in ("eer", "eer_threshold", "min_tdcf", "auroc", "eer_A01"):
        assert math.isnan(out[key].item()), key
    assert out["recall_spoof"].item() == 0.5
    assert "recall_bonafide" not in out  # undefined without bona fide rows, as in ABRMetrics
    assert metric.det_scores() == {}
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(SpoofMetrics().compute()["eer"].item())  # nothing seen at all


def test_spoof_metrics_update_validation():
    metric = SpoofMetrics(attack_ids=("A01",))
    with pytest.raises(ValueError, match="labels has shape"):
        metric.update(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metric.update(torch.tensor([0.0, math.nan]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must be 0"):
        metric.update(torch.zeros(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="attacks must index"):
        metric.update(torch.zeros(2), torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unique"):
        SpoofMetrics(attack_ids=("A01", "A01"))


def test_spoof_metrics_sync_gathers_every_score():
    """A fake two-process sync (each 'process' holding the same rows): the gathered set is both copies."""
    metric = SpoofMetrics()
    scores, labels, _, preds = random_batches()[0]
    metric.update(scores, labels, preds=preds)
    metric.sync(dist_sync_fn=lambda tensor, group=None: [tensor, tensor.clone()], distributed_available=lambda: True)
    bonafide, spoof = metric.bonafide_spoof_scores()
    assert bonafide.size == 2 * int(labels.sum()) and spoof.size == 2 * int((labels == 0).sum())
    out = metric.compute.__wrapped__()  # compute on the synced state, as the wrapped compute does under DDP
    bonafide, spoof = scores[labels == 1].double().numpy(), scores[labels == 0].double().numpy()
    expected = compute_eer(np.r_[bonafide, bonafide], np.r_[spoof, spoof])
    assert out["eer"].item() == pytest.approx(expected[0])
    assert out["pred_share_bonafide"].item() == pytest.approx(preds.double().mean().item())
    metric.unsync()
    assert metric.bonafide_spoof_scores()[0].size == int(labels.sum())


def test_det_figure():
    rng = np.random.default_rng(0)
    curves = {
        "all": (rng.normal(1, 1, 100), rng.normal(0, 1, 100)),
        "A05": (rng.normal(1, 1, 100), rng.normal(0.5, 1, 50)),
    }
    fig = det_figure(curves, title="val DET")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2
    assert [text.get_text() for text in ax.get_legend().get_texts()][0].startswith("all (EER ")
    assert ax.get_title() == "val DET"
    fig.canvas.draw()  # renders without pyplot
    with pytest.raises(ValueError, match="curve 'bad'"):
        det_figure({"bad": (np.array([]), np.array([0.1]))})

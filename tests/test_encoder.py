"""The fine-tuning detector on tiny random encoders: heads, losses, layer split, batching,
optimiser groups, save/load and resuming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.tiny_models import tiny_bert, tiny_mpnet_backbone

from valuedetect.data import load_split
from valuedetect.detectors import load_detector, make_detector
from valuedetect.encoder.batching import BucketBatchSampler, EncodedArguments, collate
from valuedetect.encoder.losses import contrastive_loss, positive_weights
from valuedetect.encoder.model import EncoderClassifier, MultipleHeads
from valuedetect.encoder.settings import TrainSettings
from valuedetect.encoder.trainer import Interrupted, param_groups


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def small_splits():
    train = load_split("training").subset(range(64))
    validation = load_split("validation").subset(range(48))
    return train, validation


def test_multiple_heads_column_j_is_head_j_of_sample_i() -> None:
    torch.manual_seed(0)
    heads = MultipleHeads(hidden=8, n_labels=20, head_hidden=4, dropout=0.0).eval()
    x = torch.randn(5, 8)
    out = heads(x)
    for i in range(5):
        for j in range(20):
            expected = heads.heads[j](x[i : i + 1])[0, 0]
            assert torch.allclose(out[i, j], expected, atol=1e-6)
    # Permuting the samples permutes the rows and nothing else.
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(heads(x[perm]), out[perm], atol=1e-6)
    # Each head is its own module: changing head 7 changes column 7 only.
    with torch.no_grad():
        heads.heads[7].net[-1].bias += 1.0
    changed = heads(x)
    assert torch.allclose(changed[:, 7], out[:, 7] + 1.0, atol=1e-6)
    others = [j for j in range(20) if j != 7]
    assert torch.allclose(changed[:, others], out[:, others], atol=1e-6)


def _eq2_reference(x: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    """The paper's Eq. 2, looped, with self-pairs left out and label-less anchors skipped."""
    z = torch.nn.functional.normalize(x, dim=-1)
    losses = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        overlap = [float(y[i] @ y[j]) for j in others]
        if sum(overlap) == 0:
            continue
        w = [o / (sum(overlap) + 1e-8) for o in overlap]
        e = [math.exp(float(z[i] @ z[j]) / tau) for j in others]
        losses.append(-math.log(sum(wi * ei for wi, ei in zip(w, e, strict=True)) / sum(e)))
    return sum(losses) / len(losses)


def test_contrastive_loss_matches_equation_2() -> None:
    torch.manual_seed(1)
    x = torch.randn(6, 4)
    y = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float32)
    for tau in (0.05, 0.5):
        assert contrastive_loss(x, y, tau).item() == pytest.approx(_eq2_reference(x, y, tau), rel=1e-4)


def test_contrastive_loss_pulls_label_sharing_pairs_together() -> None:
    torch.manual_seed(2)
    y = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=torch.float32)
    x = torch.randn(4, 3, requires_grad=True)
    before = contrastive_loss(x, y, 0.5).item()
    opt = torch.optim.SGD([x], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        contrastive_loss(x, y, 0.5).backward()
        opt.step()
    z = torch.nn.functional.normalize(x.detach(), dim=-1)
    assert contrastive_loss(x, y, 0.5).item() < before
    assert float(z[0] @ z[1]) > float(z[0] @ z[2])


def test_contrastive_loss_without_partners_is_zero_not_nan() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([[1, 0], [0, 1], [0, 0]], dtype=torch.float32)
    loss = contrastive_loss(x, y)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(x.grad).all()


def test_positive_weights_favour_rare_categories() -> None:
    labels = torch.tensor([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=torch.float32)
    w = positive_weights(labels, "balanced")
    assert w is not None and w[1] > w[0]
    assert positive_weights(labels, "none") is None
    assert torch.allclose(positive_weights(labels, "sqrt") ** 2, w)


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_cached_bottom_gives_the_same_output_as_a_full_forward(kind: str, tmp_path) -> None:
    if kind == "bert":
        from transformers import BertModel

        backbone = BertModel.from_pretrained(tiny_bert(tmp_path, layers=3))
    else:
        backbone = tiny_mpnet_backbone(layers=3)
    model = EncoderClassifier(backbone, 20, frozen_layers=2).eval()
    ids = torch.randint(5, 60, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    full, _ = model(mask, input_ids=ids)
    hidden = model.bottom(ids, mask)
    cached, _ = model(mask, hidden=hidden)
    assert torch.allclose(full, cached, atol=1e-5)
    # The split restores the model: a plain forward still runs all blocks.
    assert len(model.backbone.encoder.layer) == 3


def test_freezing_leaves_only_top_blocks_and_heads_trainable(tmp_path) -> None:
    from transformers import BertModel

    model = EncoderClassifier(BertModel.from_pretrained(tiny_bert(tmp_path, layers=3)), 20, frozen_layers=2)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.encoder", "head.heads"}
    names = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone")]
    assert all(".layer.2." in n for n in names)


def test_layerwise_learning_rate_decay(tmp_path) -> None:
    from transformers import BertModel

    model = EncoderClassifier(BertModel.from_pretrained(tiny_bert(tmp_path, layers=3)), 20, frozen_layers=0)
    s = TrainSettings(lr=1e-3, head_lr=1e-2, layer_decay=0.5)
    lr_of = {}
    for group in param_groups(model, s, s.lr):
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    named = dict(model.named_parameters())
    assert lr_of[id(named["backbone.encoder.layer.2.output.dense.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["backbone.encoder.layer.1.output.dense.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(named["backbone.encoder.layer.0.output.dense.weight"])] == pytest.approx(2.5e-4)
    assert lr_of[id(named["backbone.embeddings.word_embeddings.weight"])] == pytest.approx(1.25e-4)
    assert lr_of[id(named["head.heads.0.net.1.weight"])] == pytest.approx(1e-2)


def test_bucket_sampler_covers_everything_once_and_is_deterministic_per_epoch() -> None:
    lengths = np.random.default_rng(0).integers(3, 60, size=203)
    sampler = BucketBatchSampler(lengths, batch_size=16, seed=7, pool=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(203))
    assert len(first) == len(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    # Bucketing: padding waste is far below that of random batches.
    def waste(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[b]) - sum(lengths[b]) for b in batches)

    rng = np.random.default_rng(1)
    order = rng.permutation(203)
    random_batches = [order[i : i + 16].tolist() for i in range(0, 203, 16)]
    assert waste(first) < 0.5 * waste(random_batches)


def test_collate_pads_to_the_longest_in_batch() -> None:
    data = EncodedArguments([[2, 5, 3], [2, 7, 8, 9, 3]], np.eye(2, 20))
    batch = collate([data[0], data[1]], pad_id=0)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].shape == (2, 20)


def _settings(model_dir: str, **extra: object) -> dict:
    base = {"model": model_dir, "epochs": 2, "batch_size": 8, "trainable_layers": 1, "lr": 1e-3,
            "head_lr": 1e-2, "patience": 0, "thresholds": "global", "seed": 3}
    base.update(extra)
    return base


def test_detector_fits_saves_and_loads_identically(tiny_model_dir, small_splits, tmp_path) -> None:
    train, validation = small_splits
    detector = make_detector("encoder", _settings(tiny_model_dir, heads="single"))
    detector.fit(train, validation)
    scores = detector.predict_proba(validation.arguments)
    assert scores.shape == (48, 20) and np.all((scores >= 0) & (scores <= 1))
    assert detector.thresholds is not None
    assert detector.info["parameters_trainable"] < detector.info["parameters_total"]
    detector.save(tmp_path / "det")
    loaded = load_detector(tmp_path / "det")
    assert np.allclose(loaded.predict_proba(validation.arguments), scores, atol=1e-6)
    assert np.array_equal(loaded.predict(validation.arguments), detector.predict(validation.arguments))


def test_contrastive_pretraining_and_extra_loss_run(tiny_model_dir, small_splits) -> None:
    train, validation = small_splits
    detector = make_detector("encoder", _settings(
        tiny_model_dir, contrastive_weight=0.5, contrastive_pretrain_epochs=1, epochs=1, heads="multiple",
        head_hidden=8))
    detector.fit(train, validation)
    stages = [h["stage"] for h in detector.info["history"]]
    assert stages == ["pretrain", "classify"]
    assert all(math.isfinite(h["loss"]) for h in detector.info["history"])


@pytest.mark.parametrize("extra", [{}, {"contrastive_pretrain_epochs": 1, "contrastive_weight": 0.3}])
def test_interrupted_training_resumes_to_the_same_result(tiny_model_dir, small_splits, tmp_path, extra) -> None:
    train, validation = small_splits
    settings = _settings(tiny_model_dir, epochs=3, checkpoint_every=3, dropout=0.1, **extra)

    reference = make_detector("encoder", settings)
    reference.checkpoint_dir = tmp_path / "ref"
    reference.fit(train, validation)

    interrupted = make_detector("encoder", settings)
    interrupted.checkpoint_dir = tmp_path / "run"

    def stop(state) -> None:  # 8 steps an epoch: stop inside the second classify epoch
        if state.stage == "classify" and state.epoch == 1 and state.step_in_epoch == 5:
            raise Interrupted

    interrupted.on_step = stop
    with pytest.raises(Interrupted):
        interrupted.fit(train, validation)

    resumed = make_detector("encoder", settings)
    resumed.checkpoint_dir = tmp_path / "run"
    resumed.resume = True
    resumed.fit(train, validation)
    expected = reference.model.trainable_state_dict()
    got = resumed.model.trainable_state_dict()
    for key, value in expected.items():
        assert torch.allclose(got[key], value, atol=1e-6), key
    assert resumed.info["history"] == reference.info["history"]


def test_split_refuses_architectures_it_would_get_wrong_and_accepts_distilbert() -> None:
    from transformers import DistilBertConfig, DistilBertModel, ElectraConfig, ElectraModel

    from valuedetect.errors import ValueDetectError

    torch.manual_seed(0)
    electra = ElectraModel(ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueDetectError, match="trainable_layers = -1"):
        EncoderClassifier(electra, 20, frozen_layers=1)
    EncoderClassifier(electra, 20, frozen_layers=0)  # whole-model fine-tuning still works
    distil = DistilBertModel(DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    model = EncoderClassifier(distil, 20, frozen_layers=1).eval()
    ids = torch.randint(5, 50, (3, 7))
    mask = torch.ones_like(ids)
    full, _ = model(mask, input_ids=ids)
    cached, _ = model(mask, hidden=model.bottom(ids, mask))
    assert torch.allclose(full, cached, atol=1e-5)


def test_sharded_batches_are_never_empty_and_cover_each_batch() -> None:
    lengths = list(range(3, 20))  # 17 arguments
    shards = [BucketBatchSampler(lengths, batch_size=17, seed=1, shard=r, num_shards=8) for r in range(8)]
    parts = [next(iter(s)) for s in shards]
    assert all(parts) and sorted(i for p in parts for i in p) == list(range(17))
    # A batch smaller than the process count is dropped for every process, and lengths agree.
    small = [BucketBatchSampler(list(range(10)), batch_size=4, seed=1, shard=r, num_shards=3) for r in range(3)]
    assert {len(s) for s in small} == {2} and all(len(list(s)) == 2 for s in small)


def test_resume_with_other_settings_is_refused(tiny_model_dir, small_splits, tmp_path) -> None:
    from valuedetect.errors import ValueDetectError

    train, validation = small_splits
    first = make_detector("encoder", _settings(tiny_model_dir, epochs=2))
    first.checkpoint_dir = tmp_path / "run"

    def stop(state) -> None:
        if state.epoch == 1 and state.step_in_epoch == 1:
            raise Interrupted

    first.on_step = stop
    with pytest.raises(Interrupted):
        first.fit(train, validation)
    other = make_detector("encoder", _settings(tiny_model_dir, epochs=2, lr=5e-4))
    other.checkpoint_dir = tmp_path / "run"
    other.resume = True
    with pytest.raises(ValueDetectError, match="other settings"):
        other.fit(train, validation)


def test_a_broken_saved_detector_gives_a_clear_error(tiny_model_dir, small_splits, tmp_path) -> None:
    from valuedetect.errors import InputError

    train, validation = small_splits
    folder = make_detector("encoder", _settings(tiny_model_dir, epochs=1)).fit(train, validation).save(tmp_path / "d")
    (folder / "trained-weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="trained-weights"):
        load_detector(folder)
    (folder / "detector.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"detector\.json"):
        load_detector(folder)


def test_frozen_state_cache_is_read_back_and_gives_identical_training(tiny_model_dir, small_splits, tmp_path,
                                                                      monkeypatch) -> None:
    from valuedetect.encoder import state_cache

    train, validation = small_splits
    settings = _settings(tiny_model_dir, heads="single", epochs=1)
    plain = make_detector("encoder", settings)
    plain.fit(train, validation)

    monkeypatch.setenv(state_cache.ENVIRONMENT_VARIABLE, str(tmp_path / "states"))
    writer = make_detector("encoder", settings)
    writer.fit(train, validation)
    entries = sorted((tmp_path / "states").glob("*.pt"))
    assert len(entries) == 2  # training and validation
    computed = []
    monkeypatch.setattr(type(writer), "_compute_bottom",
                        lambda self, ids, label: computed.append(label) or pytest.fail("cache missed"))
    reader = make_detector("encoder", settings)
    lines: list[str] = []
    reader.log = lines.append
    reader.fit(train, validation)
    assert computed == [] and sum("read from" in line for line in lines) == 2
    for detector in (writer, reader):
        assert np.array_equal(detector.predict_proba(validation.arguments), plain.predict_proba(validation.arguments))


def test_frozen_state_key_changes_with_weights_ids_and_depth(tiny_model_dir) -> None:
    from transformers import AutoModel

    from valuedetect.encoder.state_cache import state_key

    backbone = AutoModel.from_pretrained(tiny_model_dir)
    ids = [[1, 2, 3], [4, 5]]
    key = state_key(backbone, 1, ids)
    assert key == state_key(backbone, 1, [[1, 2, 3], [4, 5]])
    assert key != state_key(backbone, 2, ids)
    assert key != state_key(backbone, 1, [[1, 2], [3, 4, 5]])
    with torch.no_grad():
        next(backbone.parameters())[0, 0] += 1e-3
    assert key != state_key(backbone, 1, ids)


def test_a_damaged_cache_entry_is_a_miss(tmp_path) -> None:
    from valuedetect.encoder.state_cache import load_states, save_states

    states = [torch.randn(3, 4), torch.randn(5, 4)]
    save_states(tmp_path, "k", states)
    loaded = load_states(tmp_path, "k")
    assert loaded is not None and all(torch.equal(a, b) for a, b in zip(loaded, states, strict=True))
    (tmp_path / "k.pt").write_bytes(b"not a tensor file")
    assert load_states(tmp_path, "k") is None
    assert load_states(tmp_path, "missing") is None


class _Payload:
    """Pickles to a call that would leave a file behind if it ran on load."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_holds_code_is_refused_without_running_it(tmp_path) -> None:
    import torch

    from valuedetect.encoder.trainer import _load_checkpoint
    from valuedetect.errors import ValueDetectError

    marker = tmp_path / "ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": {}, "evil": _Payload(str(marker))}, path)
    with pytest.raises(ValueDetectError, match="not a checkpoint this version can read safely"):
        _load_checkpoint(path)
    assert not marker.exists()
    torch.save({"weights": {"w": torch.zeros(2)}, "state": {"epoch": 1}}, path)
    assert _load_checkpoint(path)["state"] == {"epoch": 1}


def test_the_training_standard_reads_the_classification_loss_not_the_contrastive_term() -> None:
    from types import SimpleNamespace

    from valuedetect.detectors.encoder import EncoderDetector

    labels = (np.random.default_rng(0).random((200, 20)) < 0.2).astype(np.int8)
    history = [{"stage": "classify", "epoch": 1, "loss": 0.9, "bce_loss": 0.3}]  # BCE + 0.1 x contrastive
    state = SimpleNamespace(history=history, best_epoch=1, stopped_early=False)
    standard = EncoderDetector._training_standard(state, labels, None)
    assert standard.final_loss == 0.3 and standard.final_loss < standard.constant_loss

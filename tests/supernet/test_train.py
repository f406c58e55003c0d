"""InstaTune training: it learns, the sandwich trains sub-networks, and resume is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from supernet.arch import BertElasticSpace
from supernet.checkpoint import load_pretrained
from supernet.data import TextSplit
from supernet.errors import ConfigError
from supernet.evaluate import evaluate
from supernet.instatune import InstaTuneConfig, sandwich_step, step_archs, step_rng
from supernet.train import CHECKPOINT, TRAIN_LOG, TrainConfig, TrainResult, train_supernet
from tests.supernet.helpers import real_tokenizer, toy_sentiment

SPACE = BertElasticSpace.default(num_layers=3, num_heads=4, intermediate_size=64)


def _config(**overrides: object) -> TrainConfig:
    base = dict(
        steps=8,
        batch_size=8,
        learning_rate=1e-3,
        max_length=32,
        checkpoint_every=3,
        log_every=1,
        importance_batches=2,
    )
    return TrainConfig.from_dict({**base, **overrides})


def test_resume_after_a_kill_ends_with_the_same_weights(tiny_bert_dir: Path, tmp_path: Path) -> None:
    data, tok = toy_sentiment(), real_tokenizer()
    config = _config()

    straight = load_pretrained(tiny_bert_dir, num_labels=2)
    train_supernet(straight, SPACE, data, tok, config, tmp_path / "straight", progress=False)

    def kill_at_step_5(step: int, _losses: object) -> None:
        if step == 5:
            raise KeyboardInterrupt  # like a kill: the last checkpoint is at step 3

    killed = load_pretrained(tiny_bert_dir, num_labels=2)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(
            killed, SPACE, data, tok, config, tmp_path / "killed", progress=False, on_step_end=kill_at_step_5
        )
    assert torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=False)["step"] == 3

    resumed = load_pretrained(tiny_bert_dir, num_labels=2)  # a fresh process would start from pretrained weights
    result = train_supernet(resumed, SPACE, data, tok, config, tmp_path / "killed", progress=False)
    assert result.resumed_from == 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    log_steps = [
        int(line.split('"step": ')[1].split(",")[0])
        for line in (tmp_path / "killed" / TRAIN_LOG).read_text().splitlines()
    ]
    assert log_steps == list(range(1, 9))


def test_resume_with_another_config_is_refused(tiny_bert_dir: Path, tmp_path: Path) -> None:
    data, tok = toy_sentiment(), real_tokenizer()
    train_supernet(
        load_pretrained(tiny_bert_dir, num_labels=2),
        SPACE,
        data,
        tok,
        _config(steps=3),
        tmp_path,
        progress=False,
    )
    with pytest.raises(ConfigError, match="learning_rate"):
        train_supernet(
            load_pretrained(tiny_bert_dir, num_labels=2),
            SPACE,
            data,
            tok,
            _config(steps=3, learning_rate=1e-4),
            tmp_path,
            progress=False,
        )


def test_resume_with_another_depth_rule_is_refused_and_an_old_checkpoint_counts_as_first(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    data, tok = toy_sentiment(), real_tokenizer()

    def train(depth_rule: str) -> TrainResult:
        model = load_pretrained(tiny_bert_dir, num_labels=2, depth_rule=depth_rule)
        return train_supernet(model, SPACE, data, tok, _config(steps=3), tmp_path, progress=False)

    train("spread")
    with pytest.raises(ConfigError, match="depth_rule='spread'"):
        train("first")
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    del checkpoint["depth_rule"]  # as written before depth rules existed
    torch.save(checkpoint, tmp_path / CHECKPOINT)
    assert train("first").resumed_from == 3
    with pytest.raises(ConfigError, match="depth_rule='first'"):
        train("spread")


def test_a_checkpoint_from_before_largest_weight_resumes_as_its_default(tiny_bert_dir: Path, tmp_path: Path) -> None:
    data, tok = toy_sentiment(), real_tokenizer()

    def train(config: TrainConfig) -> TrainResult:
        model = load_pretrained(tiny_bert_dir, num_labels=2)
        return train_supernet(model, SPACE, data, tok, config, tmp_path, progress=False)

    train(_config(steps=3))
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    del checkpoint["config"]["instatune"]["largest_weight"]  # as written before the option existed
    torch.save(checkpoint, tmp_path / CHECKPOINT)
    assert train(_config(steps=3)).resumed_from == 3
    with pytest.raises(ConfigError, match="largest_weight"):
        train(_config(steps=3, instatune={"largest_weight": 2.0}))


def test_largest_weight_scales_only_the_largest_label_loss(tiny_bert_dir: Path) -> None:
    from supernet.data import make_batches

    batch = next(make_batches(toy_sentiment().train, real_tokenizer(), batch_size=8, max_length=32))
    model = load_pretrained(tiny_bert_dir, num_labels=2).eval()  # eval: no dropout, the same function twice
    archs = step_archs(SPACE, InstaTuneConfig(num_random=2), step_rng(0, 1))
    plain = sandwich_step(model, batch, archs, InstaTuneConfig(num_random=2), backward=False)
    heavy = sandwich_step(model, batch, archs, InstaTuneConfig(num_random=2, largest_weight=3.0), backward=False)
    assert heavy.losses[0] == pytest.approx(3 * plain.losses[0], rel=1e-6)
    assert heavy.losses[1:] == pytest.approx(plain.losses[1:], rel=1e-6)
    assert float((heavy.loss - plain.loss).detach()) == pytest.approx(2 * plain.losses[0], rel=1e-5)
    with pytest.raises(ConfigError, match="largest_weight must be > 0"):
        InstaTuneConfig(largest_weight=0.0)


def test_training_does_not_touch_the_global_rng(tiny_bert_dir: Path, tmp_path: Path) -> None:
    data, tok = toy_sentiment(), real_tokenizer()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_supernet(
        load_pretrained(tiny_bert_dir, num_labels=2),
        SPACE,
        data,
        tok,
        _config(steps=2),
        tmp_path,
        progress=False,
    )
    assert torch.equal(torch.rand(3), expected)


def test_instatune_learns_the_task_for_largest_and_smallest(tiny_bert_dir: Path, tmp_path: Path) -> None:
    data, tok = toy_sentiment(n_per_class=60), real_tokenizer()
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    config = _config(steps=60, checkpoint_every=60, learning_rate=2e-3)
    train_supernet(model, SPACE, data, tok, config, tmp_path, progress=False)
    for arch in (SPACE.largest(), SPACE.smallest()):
        result = evaluate(model, data.test, tok, arch=arch, max_length=32)
        assert result.accuracy >= 0.9, (arch, result)


def test_evaluate_does_not_depend_on_dataset_order(tiny_bert_dir: Path) -> None:
    """evaluate() batches by length; reversing the split must not change accuracy or mean loss."""
    data, tok = toy_sentiment(n_per_class=30), real_tokenizer()
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    test = data.test
    reversed_test = TextSplit(texts=test.texts[::-1], labels=test.labels[::-1])
    for arch in (SPACE.largest(), SPACE.smallest()):
        a = evaluate(model, test, tok, arch=arch, batch_size=4, max_length=32)
        b = evaluate(model, reversed_test, tok, arch=arch, batch_size=4, max_length=32)
        assert a.num_examples == b.num_examples == len(test)
        assert a.accuracy == b.accuracy
        assert abs(a.loss - b.loss) < 1e-5


def test_sandwich_gradients_are_the_same_with_and_without_eager_backward(tiny_bert_dir: Path) -> None:
    data, tok = toy_sentiment(), real_tokenizer()
    from supernet.data import make_batches

    batch = next(make_batches(data.train, tok, batch_size=8, max_length=32))
    config = InstaTuneConfig(num_random=2)
    archs = step_archs(SPACE, config, step_rng(0, 1))
    assert archs[0] == SPACE.largest() and archs[1] == SPACE.smallest() and len(archs) == 4
    grads = []
    for backward in (True, False):
        model = load_pretrained(tiny_bert_dir, num_labels=2).eval()  # eval: no dropout, same function twice
        out = sandwich_step(model, batch, archs, config, backward=backward)
        if not backward:
            out.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_student_dropout_off_runs_only_the_smaller_subnetworks_without_dropout(tiny_bert_dir: Path) -> None:
    from supernet.data import make_batches

    batch = next(make_batches(toy_sentiment().train, real_tokenizer(), batch_size=8, max_length=32))
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    model.train()
    archs = [SPACE.largest(), SPACE.smallest()]
    with torch.no_grad():
        clean = model.eval()(*inputs, arch=archs[1])
        model.train()
        for student_dropout in (True, False):
            config = InstaTuneConfig(num_random=0, kd_weight=0.0, label_weight=1.0, student_dropout=student_dropout)
            out = sandwich_step(model, batch, archs, config, backward=False)
            expected = torch.nn.functional.cross_entropy(clean, batch["labels"]).item()
            assert (abs(out.losses[1] - expected) < 1e-5) == (not student_dropout)
            assert model.training  # the mode is restored
            # the largest, the teacher, keeps its dropout either way
            assert not torch.allclose(out.teacher_logits, model.eval()(*inputs, arch=archs[0]))
            model.train()


def test_standard_finetuning_config_trains_only_the_largest() -> None:
    from supernet.train import standard_finetuning

    config = standard_finetuning(_config())
    archs = step_archs(SPACE, config.instatune, step_rng(0, 1))
    assert archs == [SPACE.largest()] and config.reorder is False


def test_hf_trainer_dropin_trains_the_supernet(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from supernet.hf_trainer import InstaTuneTrainer, TextSplitDataset, text_collator

    data, tok = toy_sentiment(n_per_class=60), real_tokenizer()
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=60,
        per_device_train_batch_size=8,
        learning_rate=2e-3,
        remove_unused_columns=False,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = InstaTuneTrainer(
        model=model,
        args=args,
        train_dataset=TextSplitDataset(data.train),
        data_collator=text_collator(tok, 32),
        space=SPACE,
        instatune=InstaTuneConfig(num_random=1),
    )
    trainer.train()
    for arch in (SPACE.largest(), SPACE.smallest()):
        assert evaluate(model, data.test, tok, arch=arch, max_length=32).accuracy >= 0.9, arch

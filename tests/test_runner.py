"""The background runner: event order, command ids, stopping, closing, and bad input as
events."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from gpt2scope.engine import (
    Ablation,
    AblationMode,
    Done,
    EngineError,
    Failed,
    Finished,
    FinishReason,
    Prefilled,
    Reran,
    Runner,
    SamplingParams,
    State,
    StateChanged,
    Stepped,
    gpt2_tokenizer,
    load_model,
)
from gpt2scope.engine.run import Run
from gpt2scope.engine.runner import RUNNER_NICE


class Recorder:
    """Collects events from the worker thread; `wait` blocks until one of a type arrives."""

    def __init__(self) -> None:
        self.events: list = []
        self._arrived = threading.Condition()

    def __call__(self, event) -> None:
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    def wait(self, kind, count: int = 1, timeout: float = 20.0):
        with self._arrived:
            ok = self._arrived.wait_for(lambda: len(self.of(kind)) >= count, timeout)
        assert ok, f"no {kind.__name__} within {timeout}s: {self.events}"
        return self.of(kind)[count - 1]

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def runner(tiny_model, recorder, sampler):
    params = SamplingParams(temperature=1.0, top_k=0)
    r = Runner(tiny_model, recorder, params, seed=3, sampler=sampler)
    yield r
    r.close()


def test_events_arrive_in_order(runner, recorder):
    runner.start_prompt("Hello world")
    runner.generate(4)
    recorder.wait(Done, 2)
    kinds = [type(e).__name__ for e in recorder.events if not isinstance(e, StateChanged)]
    assert kinds == ["Prefilled", "Done"] + ["Stepped"] * 4 + ["Finished", "Done"]
    states = [e.state for e in recorder.of(StateChanged)]
    assert states == [State.PREFILLING, State.IDLE, State.GENERATING, State.IDLE]
    finished = recorder.wait(Finished)
    assert finished.reason == FinishReason.LENGTH and finished.steps == 4
    steps = recorder.of(Stepped)
    assert [s.index for s in steps] == [1, 2, 3, 4]
    assert [s.view.n_tokens for s in steps] == [3, 4, 5, 6]
    assert steps[-1].view.tokens[-4:] == tuple(s.token_id for s in steps)


def test_each_event_carries_the_id_of_the_command_it_answers(runner, recorder):
    prompt = runner.start_prompt("Hello world")
    generation = runner.generate(3)
    seed = runner.set_seed(5)
    assert prompt < generation < seed
    recorder.wait(Done, 3)
    answers = [(e.command, type(e)) for e in recorder.events if not isinstance(e, StateChanged)]
    assert answers == [
        (prompt, Prefilled),
        (prompt, Done),
        *[(generation, Stepped)] * 3,
        (generation, Finished),
        (generation, Done),
        (seed, Done),
    ]
    changed_by = [e.command for e in recorder.of(StateChanged)]
    assert changed_by == [prompt, prompt, generation, generation]  # to prefilling, to idle, ...


def test_a_stop_finishes_the_running_and_the_queued_commands_under_their_ids(
    runner, recorder, sampler
):
    sampler.hold(call=2)
    prompt = runner.start_prompt("Hello world")
    running = runner.generate(10)
    queued = runner.generate(10)
    assert sampler.reached.wait(20)
    runner.stop()
    after = runner.step()
    sampler.release()
    recorder.wait(Done, 4)
    finished = {e.command: (e.reason, e.steps) for e in recorder.of(Finished)}
    assert finished == {
        running: (FinishReason.STOPPED, 2),  # the token being sampled when the stop came
        queued: (FinishReason.STOPPED, 0),
        after: (FinishReason.LENGTH, 1),
    }
    assert [e.command for e in recorder.of(Done)] == [prompt, running, queued, after]


def test_same_seed_same_continuation(tiny_model):
    def continuation(seed: int) -> list[int]:
        rec = Recorder()
        r = Runner(tiny_model, rec, SamplingParams(temperature=1.2, top_k=0), seed=seed)
        r.start_prompt("The cat sat")
        r.generate(8)
        rec.wait(Finished)
        r.close()
        return [s.token_id for s in rec.of(Stepped)]

    assert continuation(11) == continuation(11)
    assert continuation(11) != continuation(12)


def test_stop_takes_effect_within_a_step(runner, recorder, sampler):
    sampler.slow(0.05)
    runner.start_prompt("Hello world")
    runner.generate(100)
    recorder.wait(Stepped, 3)
    runner.stop()
    finished = recorder.wait(Finished)
    assert finished.reason == FinishReason.STOPPED
    assert 3 <= finished.steps <= 5
    runner.generate(2)
    assert recorder.wait(Finished, 2).reason == FinishReason.LENGTH


def test_close_mid_generation_ends_the_thread_within_a_second(tiny_model, sampler):
    rec = Recorder()
    r = Runner(tiny_model, rec, sampler=sampler.slow(0.05))
    r.start_prompt("Hello world")
    r.generate(100)
    rec.wait(Stepped, 2)
    started = time.monotonic()
    r.close()
    assert time.monotonic() - started < 1.0
    assert not r.alive


def test_a_prompt_can_start_with_end_of_text(runner, recorder):
    """GPT-2's training documents began after <|endoftext|>; TransformerLens puts it first
    by default. With bos the run's tokens are it, then the prompt's."""
    runner.start_prompt("Hello world", bos=True)
    tokens = list(recorder.wait(Prefilled).view.tokens)
    tok = gpt2_tokenizer()
    assert tokens == [tok.eot_id, *tok.encode("Hello world")]


@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_empty_prompt_is_a_failed_event(runner, recorder, prompt):
    runner.start_prompt(prompt)
    assert "empty" in recorder.wait(Failed).message
    runner.start_prompt("fine now")
    recorder.wait(Prefilled)


def test_prompt_longer_than_the_context_says_both_numbers(runner, recorder, tiny_model):
    n_ctx = tiny_model.config.n_ctx
    runner.start_prompt(" hello" * (n_ctx + 5))
    message = recorder.wait(Failed).message
    assert f"{n_ctx + 5} tokens" in message and str(n_ctx) in message


def test_generation_ends_at_the_context_limit(runner, recorder, tiny_model):
    n_ctx = tiny_model.config.n_ctx
    runner.start_tokens([464] * (n_ctx - 3))
    runner.generate(10)
    finished = recorder.wait(Finished)
    assert finished.reason == FinishReason.CONTEXT_LIMIT and finished.steps == 3
    assert recorder.of(Stepped)[-1].view.n_tokens == n_ctx


def test_generate_before_any_prompt_fails_cleanly(runner, recorder):
    runner.generate(3)
    assert "no prompt" in recorder.wait(Failed).message


def test_end_of_text_stops_generation_and_can_continue(tiny_checkpoint, recorder):
    model = load_model(tiny_checkpoint)
    eot = 50256
    with torch.no_grad():  # make end-of-text the model's only answer
        model.params.ln_f.weight.zero_()
        model.params.ln_f.bias.copy_(model.params.wte[eot])
        model.params.wte[eot] *= 50
    r = Runner(model, recorder, SamplingParams(temperature=0.0))
    r.start_prompt("Once upon a time")
    r.generate(5)
    finished = recorder.wait(Finished)
    assert finished.reason == FinishReason.END_OF_TEXT and finished.steps == 1
    assert recorder.of(Stepped)[0].token_id == eot
    r.generate(2)
    assert recorder.wait(Finished, 2).steps == 1
    r.close()


def test_a_raising_step_is_reported_and_the_worker_lives_on(runner, recorder, sampler):
    sampler.fail(call=1)
    runner.start_prompt("Hello")
    runner.generate(3)
    assert "injected fault" in recorder.wait(Failed).message
    runner.generate(2)
    assert recorder.wait(Finished).steps == 2


def test_parameters_change_mid_run(runner, recorder):
    runner.start_prompt("Hello")
    runner.set_params(SamplingParams(temperature=0.0))
    runner.generate(3)
    recorder.wait(Finished)
    records = [s.record for s in recorder.of(Stepped)]
    assert all(r.rank == 0 and r.params.temperature == 0.0 for r in records)


def test_a_bad_top_k_fails_the_command_not_the_thread(runner, recorder):
    runner.start_prompt("Hello")
    runner.set_params(SamplingParams(top_k=60000))
    runner.generate(1)
    assert "top_k" in recorder.wait(Failed).message
    assert runner.alive


def test_branching_replaces_a_past_token_and_continues_from_there(runner, recorder):
    runner.start_prompt("Hello world")
    runner.generate(4)
    recorder.wait(Finished)
    original = recorder.of(Stepped)
    alternative = original[1].record.candidate_ids[3]
    runner.branch(2, alternative)
    branched = recorder.wait(Stepped, 5)
    assert branched.index == 2 and branched.token_id == alternative
    assert branched.record.rank == 3
    assert branched.view.tokens == original[0].view.tokens + (alternative,)
    runner.generate(2)
    recorder.wait(Finished, 2)
    assert [s.index for s in recorder.of(Stepped)[5:]] == [3, 4]


def test_branching_where_nothing_was_generated_fails_cleanly(runner, recorder):
    runner.start_prompt("Hello world")
    runner.branch(1, 42)
    assert "no generated token 1" in recorder.wait(Failed).message


# --- knock-outs -------------------------------------------------------------------------


def test_set_ablation_reruns_the_run_and_later_commands_use_it(runner, recorder, tiny_model):
    off = Ablation(AblationMode.ZERO, frozenset({(1, 2)}), frozenset({0}))
    runner.start_prompt("Hello world")
    runner.generate(2)
    recorder.wait(Done, 2)
    tokens = list(recorder.of(Stepped)[-1].view.tokens)
    command = runner.set_ablation(off)
    done = recorder.wait(Done, 3)
    assert done.command == command and runner.ablation == off
    view = recorder.of(Reran)[-1].view
    assert view.ablation == off and list(view.tokens) == tokens
    fresh = tiny_model.start(tokens, off)
    torch.testing.assert_close(view.logits, fresh.logits, atol=1e-4, rtol=0)
    assert not torch.allclose(view.logits, tiny_model.start(tokens).logits, atol=1e-3)

    runner.generate(1)
    recorder.wait(Done, 4)
    stepped = recorder.of(Stepped)[-1].view
    assert stepped.ablation == off
    torch.testing.assert_close(
        stepped.logits, tiny_model.start(list(stepped.tokens), off).logits, atol=1e-4, rtol=0
    )
    runner.start_prompt("Another prompt")
    recorder.wait(Done, 5)
    assert recorder.of(Prefilled)[-1].view.ablation == off

    runner.set_ablation(Ablation())
    recorder.wait(Done, 6)
    restored = recorder.of(Reran)[-1].view
    assert restored.ablation.empty
    torch.testing.assert_close(
        restored.logits, tiny_model.start(list(restored.tokens)).logits, atol=1e-5, rtol=0
    )


def test_a_failed_knock_out_keeps_the_last_good_run(runner, recorder, monkeypatch):
    runner.start_prompt("Hello world")
    recorder.wait(Done)
    before = recorder.of(Prefilled)[-1].view

    def overflow(view, ablation):
        raise EngineError("the model's numbers overflowed")

    monkeypatch.setattr(Run, "rerun", overflow)
    command = runner.set_ablation(Ablation(heads=frozenset({(0, 1)})))
    recorder.wait(Done, 2)
    assert recorder.of(Failed)[-1].command == command
    assert runner.ablation.empty and len(recorder.of(Prefilled)) == 1
    runner.generate(1)
    recorder.wait(Done, 3)
    after = recorder.of(Stepped)[-1].view
    assert after.ablation.empty and after.tokens[:-1] == before.tokens


def test_knocking_out_a_head_the_model_lacks_is_one_failed_line(runner, recorder):
    runner.set_ablation(Ablation(heads=frozenset({(0, 9), (5, 0)}), mlps=frozenset({7})))
    recorder.wait(Done)
    message = recorder.of(Failed)[-1].message
    assert message == "cannot knock out L0H9 L5H0 L7mlp: the model has 2 layers of 4 heads"
    assert runner.ablation.empty


def test_show_run_adopts_a_patched_run_and_generation_sees_the_patched_past(
    runner, recorder, tiny_model
):
    from gpt2scope.engine.patching import Pair, Patch, patched_run

    clean, corrupt = [5, 6, 7, 8, 9], [5, 6, 70, 8, 9]
    pair = Pair(tiny_model.start(clean).view(), tiny_model.start(corrupt).view(), 1, 2)
    run = patched_run(pair, Patch("resid_pre", 0, 2))  # layer 0 at the only difference
    runner.show_run(run)
    prefilled = recorder.wait(Prefilled)
    assert prefilled.view.tokens == tuple(corrupt) and prefilled.view.patch
    runner.generate(1)
    recorder.wait(Done, 2)
    # Patched at layer 0 where the prompts differ, the run is the clean one's past: the next
    # token sees exactly what it would after the clean prompt.
    stepped = recorder.of(Stepped)[-1]
    after_clean = tiny_model.start([*clean, stepped.token_id]).logits
    torch.testing.assert_close(stepped.view.logits, after_clean, atol=1e-4, rtol=0)
    runner.set_ablation(Ablation(AblationMode.ZERO, frozenset({(0, 0)})))
    failed = recorder.wait(Failed)
    assert "patched run" in failed.message and runner.ablation.empty


def thread_nice(native_id: int) -> int:
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_runner_thread_runs_below_the_ui_thread(runner, recorder):
    """So that a key gets a core while the runner decodes on a machine it keeps busy."""
    runner.start_prompt("Hello world")
    runner.generate(2)
    recorder.wait(Done, 2)
    ours = thread_nice(threading.get_native_id())
    assert thread_nice(runner._thread.native_id) == min(ours + RUNNER_NICE, 19)

"""Tasks: splits, held-out removal, determinism, file parsing, prompts, and every config error."""

from __future__ import annotations

import json

import pytest

from rladctl.config import PromptConfig, TaskConfig
from rladctl.errors import ArtifactError, ConfigError, MissingPathError
from rladctl.tasks.catalog import TaskItem, build_task, json_safe, render_prompt


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------------------------
# reasoning-gym tasks


def test_held_out_questions_are_removed_from_train():
    import reasoning_gym

    # reasoning-gym seeds item i with seed + i, so train positions 20..29 ARE eval items 0..9.
    raw = reasoning_gym.create_dataset("knights_knaves", seed=0, size=40)
    assert raw[20]["question"] == reasoning_gym.create_dataset("knights_knaves", seed=20, size=10)[0]["question"]

    task = build_task(TaskConfig(name="knights_knaves", seed=0, size=40, eval_seed=20, eval_size=10))
    train, evals = task.items("train", 0, 40), task.items("eval", 0, 10)
    assert {item.question for item in train}.isdisjoint(item.question for item in evals)
    assert len(train) == task.split_size("train") == 40  # replaced, not shortened
    # positions 20..29 come from the first fresh draw, seed 0 + 1 * size = 40; the rest are raw
    assert [item.metadata["seed"] for item in train] == [0] * 20 + [40] * 10 + [0] * 10
    assert train[19].question == raw[19]["question"]
    assert task.score(train[25].metadata, train[25].answer) == 1.0  # re-found from its draw seed


def test_held_out_questions_are_cached_for_the_process_and_on_disk(tmp_path, monkeypatch):
    """Every stage of every iteration builds its task, and generating the eval split can take long."""
    import rladctl.tasks.catalog as tasks

    monkeypatch.setenv("RLADCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(tasks, "_HELD_OUT", {})
    cfg = TaskConfig(name="knights_knaves", seed=0, size=40, eval_seed=20, eval_size=10)
    expected = [item.question for item in build_task(cfg).items("train", 0, 40)]
    [cache_file] = (tmp_path / "held-out").iterdir()
    evals = {item.question for item in build_task(cfg).items("eval", 0, 10)}
    assert set(json.loads(cache_file.read_text())["questions"]) == evals

    def no_generation(*args):
        raise AssertionError("the eval split was generated again")

    monkeypatch.setattr(
        tasks.GymTask,
        "_make_entry",
        lambda self, seed, size, index, mix=0: (
            no_generation() if seed == cfg.eval_seed else tasks.GymTask._create_dataset(self, seed, size, mix)[index]
        ),
    )
    assert [item.question for item in build_task(cfg).items("train", 0, 40)] == expected  # this process's copy
    monkeypatch.setattr(tasks, "_HELD_OUT", {})
    assert [item.question for item in build_task(cfg).items("train", 0, 40)] == expected  # the disk's
    cache_file.write_text('{"for": ')  # damaged: generated again, the same
    monkeypatch.undo()
    monkeypatch.setenv("RLADCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(tasks, "_HELD_OUT", {})
    assert [item.question for item in build_task(cfg).items("train", 0, 40)] == expected
    assert set(json.loads(cache_file.read_text())["questions"]) == evals


def test_items_are_deterministic_and_json_safe():
    cfg = TaskConfig(name="knights_knaves", config={"n_people": 3}, seed=5, size=10, eval_size=3)
    first, second = build_task(cfg).items("train", 2, 3), build_task(cfg).items("train", 2, 3)
    assert first == second
    assert first[0].prompt_id == "knights_knaves/train/0000002"
    metadata = first[0].metadata
    assert (metadata["split"], metadata["index"], metadata["seed"]) == ("train", 2, 5)
    assert json.loads(json.dumps(metadata)) == metadata  # tuples and numpy strings converted
    assert metadata["names"] and all(type(name) is str for name in metadata["names"])


def test_items_wrap_around_the_split():
    task = build_task(TaskConfig(name="chain_sum", seed=0, size=4, eval_seed=100, eval_size=2))
    ids = [item.prompt_id for item in task.items("train", 3, 3)]
    assert ids == ["chain_sum/train/0000003", "chain_sum/train/0000000", "chain_sum/train/0000001"]
    assert task.items("eval", 5, 1)[0].prompt_id == "chain_sum/eval/0000001"  # 5 % 2
    assert task.items("train", 0, 0) == []


def test_one_call_never_returns_an_item_twice():
    task = build_task(TaskConfig(name="chain_sum", seed=0, size=4, eval_seed=100, eval_size=2))
    assert len({item.prompt_id for item in task.items("train", 2, 4)}) == 4  # the whole split, wrapped
    with pytest.raises(
        ConfigError, match=r"3 eval prompts were asked for but the eval split of task 'chain_sum' holds 2"
    ):
        task.items("eval", 0, 3)
    with pytest.raises(ConfigError, match=r"ask for at most 4 prompts, or raise task.size"):
        task.items("train", 0, 5)


def test_difficulty_levels():
    knights = build_task(TaskConfig(name="knights_knaves", config={"n_people": 3}, size=2, eval_size=1))
    assert knights.difficulty(knights.items("train", 0, 1)[0].metadata) == "3"
    chain = build_task(TaskConfig(name="chain_sum", seed=0, size=2, eval_seed=100, eval_size=1))
    assert chain.difficulty(chain.items("train", 0, 1)[0].metadata) == "5"  # num_terms of item 0
    # generic: a scalar "difficulty" is used, a dict of config ranges is not; the field overrides
    gsm = build_task(TaskConfig(name="gsm_symbolic", size=2, eval_size=1))
    assert gsm.difficulty({"difficulty": 1.0}) == "1.0"
    assert gsm.difficulty({"difficulty": {"a": [1, 2]}}) is None
    assert gsm.difficulty({}) is None
    custom = build_task(TaskConfig(name="chain_sum", difficulty_field="difficulty.num_digits", size=2, eval_size=1))
    assert custom.difficulty({"difficulty": {"num_digits": 4}}) == "4"


def test_reward_version_and_corpus():
    task = build_task(TaskConfig(name="chain_sum", seed=0, size=3, eval_seed=100, eval_size=1))
    assert task.reward_version.startswith("reasoning_gym==0.1.")
    corpus = task.corpus(10)
    assert len(corpus) == 3  # capped at the split
    assert corpus[0].endswith("\n-14282") and "1663 - 5242" in corpus[0]


def test_unknown_task_suggests_a_close_match():
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="knight_knaves"))
    assert "task.name" in one_line(exc) and "did you mean 'knights_knaves'?" in one_line(exc)


def test_bad_config_key_names_task_and_key():
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="knights_knaves", config={"n_peple": 3}))
    text = one_line(exc)
    assert "'knights_knaves'" in text and "'n_peple'" in text and "did you mean 'n_people'?" in text
    with pytest.raises(ConfigError, match="task.seed"):
        build_task(TaskConfig(name="chain_sum", config={"seed": 3}))


def test_bad_config_value_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="knights_knaves", config={"n_people": 0}))
    assert "'knights_knaves'" in one_line(exc) and "at least 1" in one_line(exc)


def test_empty_split_and_bad_split_name():
    task = build_task(TaskConfig(name="chain_sum", size=2, eval_size=0))
    with pytest.raises(ConfigError) as exc:
        task.items("eval", 0, 1)
    assert "eval split" in one_line(exc)
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        task.items("trian", 0, 1)


def test_score_refuses_metadata_that_points_nowhere():
    task = build_task(TaskConfig(name="chain_sum", size=2, eval_size=1))
    with pytest.raises(ArtifactError):
        task.score({"split": "train", "index": 7}, "3")
    with pytest.raises(ArtifactError):
        task.score({"source_index": 0}, "3")


# --------------------------------------------------------------------------------------------
# file tasks


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_task_splits_on_the_last_rows(tmp_path):
    rows = [{"q": f"what is {i}+{i}?", "a": 2 * i, "level": i % 2} for i in range(5)]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    task = build_task(
        TaskConfig(
            name="file", path=str(path), question_field="q", answer_field="a", eval_size=2, difficulty_field="level"
        )
    )
    assert task.name == "file" and task.reward_version.startswith("math_verify==")
    assert (task.split_size("train"), task.split_size("eval")) == (3, 2)
    item = task.items("eval", 0, 1)[0]
    assert item == TaskItem("0000003", "what is 3+3?", "6", {"level": 1, "row": 3, "split": "eval", "index": 0})
    assert task.difficulty(item.metadata) == "1"
    assert task.score(item.metadata, "6.0") == 1.0
    assert task.score(item.metadata, "7") == 0.0
    assert task.corpus(1) == ["what is 0+0?\n0"]


def test_jsonl_task_uses_ids_blank_lines_and_holds_out_repeated_questions(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"id": "a", "question": "q1", "answer": "1"}\n\n{"id": "b", "question": "q2", "answer": "2"}\n'
        '{"id": "c", "question": "q2", "answer": "2"}\n'
    )
    task = build_task(TaskConfig(name="file", path=str(path), id_field="id", eval_size=1))
    assert task.split_size("train") == 1 and task.items("train", 0, 1)[0].prompt_id == "a"  # "b" is held out
    assert task.items("eval", 0, 1)[0].prompt_id == "c"


def test_parquet_task_with_split_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    table = pa.table(
        {
            "problem": ["1/2?", "2+2?", "3+3?"],
            "solution": ["\\frac{1}{2}", "4", "6"],
            "split": ["train", "test", "train"],
        }
    )
    pq.write_table(table, path)
    task = build_task(
        TaskConfig(name="file", path=str(path), question_field="problem", answer_field="solution", eval_size=99)
    )
    assert [item.question for item in task.items("train", 0, 2)] == ["1/2?", "3+3?"]
    assert [item.prompt_id for item in task.items("eval", 0, 1)] == ["0000001"]  # the row number
    first = task.items("train", 0, 1)[0]
    assert first.metadata == {"row": 0, "split": "train", "index": 0}  # our "split" replaces the column
    assert task.score(first.metadata, "0.5") == 1.0
    assert task.score(first.metadata, "blah") == 0.0


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"question": "q", "answer": "1"}\nnot json\n', ["line 2 is not JSON", "data.jsonl"]),
        ('{"question": "q", "answer": "1"}\n{"question": "q2"}\n', ["line 2 has no field 'answer'", "data.jsonl"]),
        ('{"question": "q", "answr": "1"}\n', ["line 1 has no field 'answer'", "did you mean 'answr'?"]),
        ("[1, 2]\n", ["line 1 is a JSON list", "data.jsonl"]),
        ("\n\n", ["has no rows", "data.jsonl"]),
        ('{"question": "q", "answer": "1", "split": "dev"}\n', ["line 1 has split 'dev'", "train, test or eval"]),
        (
            '{"question": "q", "answer": "1", "split": "train"}\n{"question": "q", "answer": "1"}\n',
            ["line 2 has no field 'split'"],
        ),
    ],
)
def test_jsonl_errors_name_the_file_and_line(tmp_path, content, expected):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="file", path=str(path), eval_size=1))
    text = one_line(exc)
    assert all(part in text for part in expected), text


def test_duplicate_ids_are_refused(tmp_path):
    path = write_jsonl(
        tmp_path / "data.jsonl", [{"id": 1, "question": "a", "answer": "1"}, {"id": 1, "question": "b", "answer": "2"}]
    )
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="file", path=str(path), id_field="id", eval_size=1))
    assert "line 2 repeats id '1'" in one_line(exc)


def test_parquet_missing_column_names_the_row_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"question": ["q"], "gold": ["1"]}), path)
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="file", path=str(path)))
    text = one_line(exc)
    assert "row 0 has no field 'answer'" in text and "data.parquet" in text


def test_missing_file_empty_path_and_unknown_extension(tmp_path):
    with pytest.raises(MissingPathError) as exc:
        build_task(TaskConfig(name="file", path=str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl does not exist" in one_line(exc)
    with pytest.raises(ConfigError, match="task.path is empty"):
        build_task(TaskConfig(name="file"))
    csv = tmp_path / "data.csv"
    csv.write_text("question,answer\nq,1\n")
    with pytest.raises(ConfigError) as exc:
        build_task(TaskConfig(name="file", path=str(csv)))
    assert "data.csv has unknown extension '.csv'" in one_line(exc)


# --------------------------------------------------------------------------------------------
# prompts

ITEM = TaskItem("t/train/0000000", "What is 2+2?", "4", {"level": 3, "split": "train", "index": 0})


def test_render_plain_prompt():
    prompt = PromptConfig(
        template="Q: {question} (level {metadata[level]})",
        system="You are careful.",
        instruction="Answer in tags.",
        answer_prefix="<think>",
    )
    assert render_prompt(ITEM, prompt) == "You are careful.\nQ: What is 2+2? (level 3)\nAnswer in tags.<think>"
    assert render_prompt(ITEM, PromptConfig(instruction="")) == "What is 2+2?"


def chat_tokenizer(template: str | None):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tokenizer.chat_template = template
    return tokenizer


CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


def test_render_chat_prompt():
    prompt = PromptConfig(system="Be brief.", instruction="Use tags.", answer_prefix="<answer>")
    expected = "<system>Be brief.</system><user>What is 2+2?\nUse tags.</user><assistant><answer>"
    assert render_prompt(ITEM, prompt, chat_tokenizer(CHAT)) == expected
    no_system = PromptConfig(instruction="", chat_template="always")
    assert render_prompt(ITEM, no_system, chat_tokenizer(CHAT)) == "<user>What is 2+2?</user><assistant>"
    # "auto" without a template and "never" with one both give plain text
    assert render_prompt(ITEM, PromptConfig(instruction=""), chat_tokenizer(None)) == "What is 2+2?"
    assert (
        render_prompt(ITEM, PromptConfig(instruction="", chat_template="never"), chat_tokenizer(CHAT)) == "What is 2+2?"
    )


def test_render_prompt_errors():
    with pytest.raises(ConfigError) as exc:
        render_prompt(ITEM, PromptConfig(chat_template="always"), chat_tokenizer(None))
    assert "chat_template is 'always'" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        render_prompt(ITEM, PromptConfig(chat_template="always"))
    for template, missing in [("{quest}", "'quest'"), ("{metadata[difficulty]}", "'difficulty'"), ("{question", "")]:
        with pytest.raises(ConfigError) as exc:
            render_prompt(ITEM, PromptConfig(template=template))
        text = one_line(exc)
        assert "prompt.template" in text and template in text and missing in text


def test_json_safe_converts_numpy_and_tuples():
    import numpy as np

    value = {"a": (1, np.int64(2)), "b": np.array([[1.5]]), "c": np.str_("x"), 3: {np.bool_(True)}, "d": None}
    assert json_safe(value) == {"a": [1, 2], "b": [[1.5]], "c": "x", "3": [True], "d": None}
    assert type(json_safe(np.str_("x"))) is str


def test_mix_cycles_through_config_combinations_and_rescores():
    """task.mix = {n_people = [2, 3, 4]}: position p uses combination p % 3 (the PPL levels)."""
    from rladctl.config import load_recipe

    recipe = load_recipe(
        None, ["task.name=knights_knaves", "task.mix={n_people=[2,3,4]}", "task.eval_size=9", "task.size=30"]
    )
    task = build_task(recipe.task)
    evals = task.items("eval", 0, 9)
    assert [task.difficulty(i.metadata) for i in evals] == ["2", "3", "4"] * 3
    train = task.items("train", 0, 30)
    assert not {i.question for i in train} & {i.question for i in evals}
    assert [task.score(i.metadata, i.answer) for i in train[:6]] == [1.0] * 6
    with pytest.raises(ConfigError, match="both task.config and task.mix"):
        build_task(
            load_recipe(None, ["task.name=knights_knaves", "task.mix={n_people=[2]}", "task.config={n_people=2}"]).task
        )

import pytest

from siftkit.errors import ConfigError
from siftkit.io import formats as F


def test_detect_each_format():
    assert F.detect_format({"messages": [{"role": "user", "content": "x"}]}) == "messages"
    assert F.detect_format({"conversations": [{"from": "human", "value": "x"}]}) == "sharegpt"
    assert F.detect_format({"conversations": ["q", "a"]}) == "alternating"
    assert F.detect_format(["q", "a"]) == "alternating"
    assert F.detect_format({"instruction": "i", "input": "", "output": "o"}) == "alpaca"
    assert F.detect_format({"instruction": "i", "response": "o"}) == "alpaca"
    assert F.detect_format({"prompt": "p", "completion": "c"}) == "prompt_completion"
    assert F.detect_format({"question": "q", "answer": "a"}) == "qa"
    assert F.detect_format({"text": "just text"}) is None
    assert F.detect_format(["q", 3]) is None


def test_messages_roles_content_parts_and_tool_calls():
    turns = F.adapt_messages({"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "f"}}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "It is 42."}]})
    assert [t[0] for t in turns] == ["system", "user", "assistant", "tool", "assistant"]
    assert turns[1][1] == "Hello"
    # tool calls are kept as structure, not appended to the content (issue 10)
    assert turns[2] == ("assistant", "", [{"id": "1", "name": "f", "arguments": "{}"}], None, None)
    assert F.turn_text(turns[2]) == "f({})"


def test_sharegpt_roles_and_system():
    turns = F.adapt_sharegpt({"system": "sys", "conversations": [
        {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
        {"from": "observation", "value": "obs"}, {"from": "chatgpt", "value": "a2"}]})
    assert turns == [("system", "sys"), ("user", "q1"), ("assistant", "a1"),
                     ("assistant", "", [{"id": None, "name": "f", "arguments": "{}"}], None, None),
                     ("tool", "obs"), ("assistant", "a2")]


def test_sharegpt_unknown_role_names_field():
    with pytest.raises(F.RecordError) as e:
        F.adapt_sharegpt({"conversations": [{"from": "alien", "value": "x"}]})
    assert e.value.field == "conversations[0].from"


def test_alpaca_input_history_system_and_response_key():
    turns = F.adapt_alpaca({"instruction": "Translate.", "input": "bonjour", "output": "hello",
                            "history": [["hi", "hey"]], "system": "S"})
    assert turns == [("system", "S"), ("user", "hi"), ("assistant", "hey"),
                     ("user", "Translate.\n\nbonjour"), ("assistant", "hello")]
    assert F.adapt_alpaca({"instruction": "i", "response": "r"}) == [("user", "i"), ("assistant", "r")]
    with pytest.raises(F.RecordError) as e:
        F.adapt_alpaca({"instruction": "i", "input": "x"})
    assert e.value.field == "output"


def test_prompt_completion_strings_and_conversational():
    assert F.adapt_prompt_completion({"prompt": "p", "completion": "c"}) == [("user", "p"), ("assistant", "c")]
    turns = F.adapt_prompt_completion({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                       "completion": [{"role": "assistant", "content": "a"}]})
    assert turns == [("system", "s"), ("user", "u"), ("assistant", "a")]


def test_qa_and_alternating_and_numbers():
    assert F.adapt_qa({"question": "q", "answer": 42}) == [("user", "q"), ("assistant", "42")]
    assert F.adapt_alternating({"conversations": ["u1", "a1", "u2", "a2"]})[-1] == ("assistant", "a2")


def test_mapping_columns_templates_and_errors():
    ad = F.make_mapping_adapter({"user": "{0}", "assistant": "{2}\nThe answer is {1}."})
    assert ad(["q?", "7", "because"]) == [("user", "q?"), ("assistant", "because\nThe answer is 7.")]
    ad2 = F.make_mapping_adapter({"user": "question", "assistant": "answer", "system": "sys"})
    assert ad2({"question": "q", "answer": "a", "sys": ""}) == [("user", "q"), ("assistant", "a")]
    with pytest.raises(F.RecordError, match="no column 5"):
        F.make_mapping_adapter({"user": "0", "assistant": "5"})(["a", "b"])
    with pytest.raises(ConfigError):
        F.make_mapping_adapter({"user": "0"})
    with pytest.raises(ConfigError):
        F.make_mapping_adapter({"user": "0", "assistant": "1", "bot": "2"})


@pytest.mark.parametrize("turns,code", [
    ([], "empty_conversation"),
    ([("user", "q")], "no_assistant_turn"),
    ([("user", "q"), ("assistant", "   ")], "empty_response"),
    ([("user", " "), ("assistant", "a")], "no_user_turn"),
    ([("system", "s"), ("assistant", "a")], "no_user_turn"),
])
def test_validate_rejects_unusable(turns, code):
    assert F.validate_turns(turns)[0] == code


def test_validate_accepts_multi_turn_ending_with_user():
    assert F.validate_turns([("user", "q"), ("assistant", "a"), ("user", "thanks")]) is None


def test_non_text_content_is_an_error():
    with pytest.raises(F.RecordError, match="expected text"):
        F.adapt_qa({"question": {"x": 1}, "answer": "a"})


def test_detect_preference_and_kto_before_sft_shapes():
    assert F.detect_format({"conversations": [{"from": "human", "value": "q"}],
                            "chosen": {"from": "gpt", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}}) \
        == "preference"
    assert F.detect_format({"prompt": "p", "chosen": "a", "rejected": "b"}) == "preference"
    assert F.detect_format({"prompt": "p", "completion": "c", "label": False}) == "kto"
    assert F.detect_format({"messages": [{"role": "user", "content": "x"}], "kto_tag": True}) == "kto"
    # a non-boolean 'label' is ordinary metadata of an SFT record
    assert F.detect_format({"messages": [{"role": "user", "content": "x"}], "label": "math"}) == "messages"


@pytest.mark.parametrize("parts", [
    [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],      # OpenAI
    [{"type": "text", "value": "Hel"}, {"type": "text", "value": "lo"}],    # LLaMA-Factory
    [{"type": "text", "content": "Hel"}, {"type": "text", "content": "lo"}],
    [{"text": "Hel"}, "lo"],                                                 # untyped part, plain string
])
def test_text_parts_in_every_spelling(parts):
    turns = F.adapt_messages({"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "a"}]})
    assert turns[0] == ("user", "Hello")
    sg = F.adapt_sharegpt({"conversations": [{"from": "human", "value": parts}, {"from": "gpt", "value": "a"}]})
    assert sg[0] == ("user", "Hello")


@pytest.mark.parametrize("part,kind", [
    ({"type": "image_url", "image_url": {"url": "x.png"}}, "image_url"),
    ({"type": "image", "image": "x.png"}, "image"),
    ({"type": "input_audio", "input_audio": {"data": "..."}}, "input_audio"),
    ({"type": "video", "video": "v.mp4"}, "video"),
])
def test_non_text_parts_name_the_part_type_and_field(part, kind):
    with pytest.raises(F.RecordError) as e:
        F.adapt_messages({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"},
                                       {"role": "user", "content": [{"type": "text", "text": "see"}, part]}]})
    assert e.value.code == "unsupported_content" and e.value.field == "messages[2].content[1]"
    assert str(e.value) == f"messages[2].content[1]: {kind} parts are not supported (only text)"


def test_malformed_parts_and_calls_are_errors():
    with pytest.raises(F.RecordError, match="text part has no string"):
        F.adapt_messages({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})
    with pytest.raises(F.RecordError, match="only assistant turns can make tool calls"):
        F.adapt_messages({"messages": [{"role": "user", "content": "x", "tool_calls": [{"name": "f"}]}]})
    with pytest.raises(F.RecordError, match="tool call has no 'name'") as e:
        F.adapt_messages({"messages": [{"role": "user", "content": "x"},
                                       {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]})
    assert e.value.field == "messages[1].tool_calls[0]"


def test_legacy_function_call_and_function_role():
    turns = F.adapt_messages({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{\"a\": 1}"}},
        {"role": "function", "name": "f", "content": "1"}, {"role": "assistant", "content": "one"}]})
    assert turns[1] == ("assistant", "", [{"id": None, "name": "f", "arguments": "{\"a\": 1}"}], None, None)
    assert turns[2] == ("tool", "1", None, None, "f")
    assert F.validate_turns(turns) is None

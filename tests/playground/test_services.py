"""Playground services: validation of settings and prompts, regeneration, per-lane histories."""

import pytest

from core.errors import ApplicationError
from playground import selectors, services
from playground.models import AnswerStatus, Conversation, Message
from tests.playground.conftest import PUBLIC_SLUG

PUBLIC_ID = f"public/{PUBLIC_SLUG}"


@pytest.mark.parametrize(
    "params, field",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": "NaN"}, "presence_penalty"),
        ({"frequency_penalty": True}, "frequency_penalty"),
        ({"seed": 1}, "seed"),
    ],
)
def test_out_of_range_or_unknown_parameters_are_refused(params, field):
    with pytest.raises(ApplicationError) as exc:
        services.clean_params(params)
    assert exc.value.field == field


def test_parameters_are_normalised():
    assert services.clean_params({"temperature": "0.5", "max_tokens": "128", "top_p": ""}) == {
        "temperature": 0.5,
        "max_tokens": 128,
    }


def test_start_refuses_a_model_the_org_cannot_call(alice, org, other_org, catalog, region):
    from tests.playground.conftest import make_service

    make_service(org=other_org, slug=PUBLIC_SLUG, name="theirs", region=region)
    with pytest.raises(ApplicationError) as exc:
        services.conversation_start(org=org, user=alice, model_id="rival/theirs", content="hi")
    assert exc.value.code == "model_not_found"
    assert not Conversation.objects.exists()


def test_empty_prompt_creates_nothing(alice, org, public_model):
    with pytest.raises(ApplicationError):
        services.conversation_start(org=org, user=alice, model_id=PUBLIC_ID, content="   ")
    assert not Conversation.objects.exists()


def test_compare_needs_two_different_models(alice, org, public_model):
    with pytest.raises(ApplicationError) as exc:
        services.conversation_start(org=org, user=alice, model_id=PUBLIC_ID, compare_model_id=PUBLIC_ID, content="x")
    assert exc.value.field == "compare_model"


def test_lane_histories_keep_each_models_own_answers(alice, org, public_model, org_service):
    conv, _ = services.conversation_start(
        org=org, user=alice, model_id=PUBLIC_ID, compare_model_id="acme/my-llama", content="one", system_prompt="sys"
    )
    services.answer_record(conversation=conv, lane=0, model_id=PUBLIC_ID, content="A0", status=AnswerStatus.OK)
    services.answer_record(conversation=conv, lane=1, model_id="acme/my-llama", content="B0", status=AnswerStatus.OK)
    services.conversation_continue(
        conversation=conv, model_id=PUBLIC_ID, compare_model_id="acme/my-llama", content="two", system_prompt="sys"
    )
    assert selectors.lane_history(conv, 1) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "B0"},
        {"role": "user", "content": "two"},
    ]


def test_regenerate_drops_only_the_last_answers(alice, org, public_model):
    conv, _ = services.conversation_start(org=org, user=alice, model_id=PUBLIC_ID, content="one")
    first = services.answer_record(conversation=conv, lane=0, model_id=PUBLIC_ID, content="A", status="ok")
    services.conversation_continue(conversation=conv, model_id=PUBLIC_ID, content="two")
    services.answer_record(conversation=conv, lane=0, model_id=PUBLIC_ID, content="B", status="ok")
    prompt = services.conversation_regenerate(conversation=conv, model_id=PUBLIC_ID, params={"temperature": 1.5})
    assert prompt.content == "two"
    assert list(Message.objects.filter(conversation=conv).values_list("content", flat=True)) == ["one", "A", "two"]
    assert Message.objects.filter(pk=first.pk).exists()
    conv.refresh_from_db()
    assert conv.params == {"temperature": 1.5}

"""Console pages: the chat page, a user's conversations (private to them), rename/delete and View code."""

from decimal import Decimal

import pytest
from django.urls import reverse

from playground import services
from playground.models import AnswerStatus, Conversation
from tenancy.models import AuditEvent
from tests.playground.conftest import PUBLIC_SLUG, make_service

PUBLIC_ID = f"public/{PUBLIC_SLUG}"
INDEX = "/playground/"


@pytest.fixture
def conversation(alice, org, public_model):
    conv, _prompt = services.conversation_start(
        org=org,
        user=alice,
        model_id=PUBLIC_ID,
        content="Explain **TCP**",
        system_prompt="Be brief.",
        params={"temperature": 0.2},
    )
    services.answer_record(
        conversation=conv,
        lane=0,
        model_id=PUBLIC_ID,
        content="<script>x()</script> **SYN**",
        status=AnswerStatus.OK,
        prompt_tokens=12,
        completion_tokens=40,
        ttft_ms=100,
        latency_ms=900,
        cost=Decimal("0.000130"),
        currency="CNY",
    )
    return conv


def test_visitor_is_sent_to_login(client):
    response = client.get(INDEX)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_nav_shows_playground_and_picker_lists_public_models_and_own_services(alice_client, public_model, org_service):
    response = alice_client.get(INDEX)
    html = response.content.decode()
    assert response.status_code == 200
    assert f'href="{INDEX}"' in html and 'class="active"' in html
    assert f'<option value="{PUBLIC_ID}"' in html
    assert '<option value="acme/my-llama"' in html
    assert "not guaranteed" in html  # the machine-generated notice


def test_other_orgs_services_are_not_offered(charlie_client, public_model, org_service):
    html = charlie_client.get(INDEX).content.decode()
    assert f'<option value="{PUBLIC_ID}"' in html
    assert "acme/my-llama" not in html


def test_model_query_parameter_preselects_it(alice_client, public_model, org_service):
    html = alice_client.get(INDEX, {"model": "acme/my-llama"}).content.decode()
    assert '<option value="acme/my-llama" selected>' in html


def test_unavailable_model_in_link_is_explained_and_no_other_model_is_picked_for_it(alice_client, public_model):
    html = alice_client.get(INDEX, {"model": "public/deepseek-r1"}).content.decode()
    assert "has no running deployment" in html
    assert '<option value="" selected disabled>Pick a model</option>' in html
    picker = html[html.index('<select id="pg-model"') :]
    picker = picker[: picker.index("</select>")]
    assert picker.count(" selected>") == 0 and f'value="{PUBLIC_ID}"' in picker  # not silently chosen instead


@pytest.fixture
def embedding_model(catalog, public_org, region):
    """``public/bge-m3``, an embedding model, running publicly: it sorts before every chat model."""
    return make_service(org=public_org, slug="bge-m3", name="bge", region=region)


def test_embedding_models_are_neither_offered_nor_the_default(alice_client, public_model, embedding_model):
    html = alice_client.get(INDEX).content.decode()
    assert "public/bge-m3" not in html
    assert f'<option value="{PUBLIC_ID}" selected>' in html


def test_a_link_to_an_embedding_model_says_it_does_not_chat(alice_client, public_model, embedding_model):
    html = alice_client.get(INDEX, {"model": "public/bge-m3"}).content.decode()
    assert "is an embedding model" in html and "/v1/embeddings" in html
    assert '<option value="" selected disabled>' in html and f'<option value="{PUBLIC_ID}" selected>' not in html


def test_a_conversation_on_an_embedding_model_is_refused(alice, org, embedding_model):
    from core.errors import ApplicationError

    with pytest.raises(ApplicationError) as caught:
        services.conversation_start(org=org, user=alice, model_id="public/bge-m3", content="hi")
    assert caught.value.code == "model_not_found"


def test_catalog_model_page_links_to_playground_with_model(client, catalog, public_org, region):
    make_service(org=public_org, slug=PUBLIC_SLUG, name="qwen-small", region=region, base_url="http://127.0.0.1:9")
    html = client.get(reverse("catalog:model-detail", args=[PUBLIC_SLUG])).content.decode()
    assert f'href="{INDEX}?model=public/{PUBLIC_SLUG}"' in html


def test_no_models_running_shows_empty_state(alice_client, catalog):
    html = alice_client.get(INDEX).content.decode()
    assert "No model is running right now" in html and "pg-input" not in html


def test_conversation_page_renders_stored_answer_sanitized_with_metrics(alice_client, conversation):
    response = alice_client.get(reverse("playground:conversation", args=[conversation.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>x()</script>" not in html
    assert "&lt;script&gt;x()&lt;/script&gt; <strong>SYN</strong>" in html
    assert "12 / 40" in html and "100 ms" in html and "50.0 tok/s" in html and "¥0.00013" in html
    assert "Be brief." in html


def test_colleague_cannot_open_someone_elses_conversation(bob_client, conversation):
    assert bob_client.get(reverse("playground:conversation", args=[conversation.pk])).status_code == 404
    assert conversation.title not in bob_client.get(INDEX).content.decode()


def test_outsider_gets_404_everywhere(charlie_client, conversation):
    pk = conversation.pk
    assert charlie_client.get(reverse("playground:conversation", args=[pk])).status_code == 404
    assert charlie_client.post(reverse("playground:conversation-rename", args=[pk]), {"title": "x"}).status_code == 404
    assert charlie_client.post(reverse("playground:conversation-delete", args=[pk])).status_code == 404
    assert charlie_client.get(reverse("playground:code"), {"model": PUBLIC_ID, "conversation": pk}).status_code == 404
    assert Conversation.objects.get(pk=pk).title == conversation.title


def test_rename_via_htmx_returns_list_and_audits(alice_client, conversation):
    response = alice_client.post(
        reverse("playground:conversation-rename", args=[conversation.pk]),
        {"title": "  TCP   handshake "},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "TCP handshake" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "TCP handshake"
    event = AuditEvent.objects.get(action="conversation.rename")
    assert event.data == {"from": "Explain **TCP**", "to": "TCP handshake"}


def test_rename_to_blank_is_refused_without_change(alice_client, conversation):
    response = alice_client.post(reverse("playground:conversation-rename", args=[conversation.pk]), {"title": "   "})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Explain **TCP**"
    assert not AuditEvent.objects.filter(action="conversation.rename").exists()


def test_delete_removes_conversation_and_its_messages(alice_client, conversation):
    response = alice_client.post(reverse("playground:conversation-delete", args=[conversation.pk]))
    assert response.status_code == 302 and response["Location"] == INDEX
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert AuditEvent.objects.filter(action="conversation.delete", target_id=str(conversation.pk)).exists()


def test_malformed_conversation_id_is_404(alice_client, public_model):
    assert alice_client.get("/playground/c/not-a-uuid/").status_code == 404
    assert alice_client.get(reverse("playground:code"), {"model": PUBLIC_ID, "conversation": "zzz"}).status_code == 404


def test_view_code_contains_conversation_draft_and_settings(alice_client, conversation, settings):
    settings.SITE_URL = "https://maas.example.cn"
    response = alice_client.get(
        reverse("playground:code"),
        {
            "model": PUBLIC_ID,
            "conversation": str(conversation.pk),
            "system": "Be brief.",
            "content": "And UDP?",
            "temperature": "0.2",
            "max_tokens": "256",
        },
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "https://maas.example.cn/v1/chat/completions" in html
    assert "Explain **TCP**" in html and "And UDP?" in html and "Be brief." in html
    assert "&quot;max_tokens&quot;: 256" in html and "Copy" in html
    assert "<html" not in html  # htmx gets the fragment


def test_view_code_with_bad_parameter_explains_instead_of_failing(alice_client, public_model):
    response = alice_client.get(reverse("playground:code"), {"model": PUBLIC_ID, "temperature": "hot"})
    assert response.status_code == 200
    assert "temperature must be a number" in response.content.decode()


def test_index_query_count_does_not_grow_with_conversations(
    alice_client, alice, org, public_model, django_assert_max_num_queries
):
    for i in range(15):
        services.conversation_start(org=org, user=alice, model_id=PUBLIC_ID, content=f"prompt {i}")
    with django_assert_max_num_queries(12):
        response = alice_client.get(INDEX)
    assert response.content.decode().count('<li class="pg-conv') == 15

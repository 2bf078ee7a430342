"""Requests that can never run on the served model are refused at submit (422), not queued."""

from __future__ import annotations

from tests.service.conftest import job_body


def test_lora_targets_the_model_lacks_are_422_naming_the_valid_ones(client):
    body = job_body()
    body["sdpo"] = {"lora": {"targets": ["q_proj", "attn.c_attn"]}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert "sdpo.lora.targets" in err["message"] and "attn.c_attn" in err["message"]
    assert err["details"]["unknown"] == ["attn.c_attn"]
    assert {"q_proj", "down_proj"} <= set(err["details"]["valid"])
    # nothing was queued for it: the key's three active-job slots are all still free
    for i in range(3):
        assert client.post("/v1/jobs", json=job_body(f"Say hi {i}.")).status_code == 202


def test_targets_are_not_checked_where_no_adapter_is_built(client):
    body = job_body(strategy="best_of_k")
    body["sdpo"] = {"lora": {"targets": ["attn.c_attn"]}}
    assert client.post("/v1/jobs", json=body).status_code == 202
    ok = job_body("Say hello.")
    ok["sdpo"] = {"lora": {"targets": ["q_proj", "v_proj"]}}
    assert client.post("/v1/jobs", json=ok).status_code == 202


def test_more_lora_layers_than_the_model_has_blocks_is_422_naming_the_limit(client):
    from service.weights import block_count

    blocks = block_count("tiny")
    body = job_body()
    body["sdpo"] = {"lora": {"layers": blocks + 1}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "sdpo.lora.layers" in err["message"] and f"1..{blocks}" in err["message"]
    assert err["details"] == {"field": "sdpo.lora.layers", "value": blocks + 1, "max": blocks}
    body["sdpo"] = {"lora": {"layers": blocks}}
    assert client.post("/v1/jobs", json=body).status_code == 202

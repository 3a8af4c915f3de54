"""The binary form, end to end: safetensors gradients in, safetensors parameters out, mixed
with JSON both ways, on a live server (SQLite, PostgreSQL), checked against the core itself."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_from_safetensors, tensors_to_safetensors
from tests.in_process import InProcessServer
from tests.support import (
    CoreRun,
    bearer,
    create_session,
    json_bytes,
    random_arrays,
    wire_tensors,
)

SHAPES = {"w": (3, 4), "b": (4,), "scale": ()}


def step_request(gradients, *, binary: bool, loss: float | None = None, partial: bool = False):
    """(content, headers) of a step in either form; `gradients` by tensor name."""
    if binary:
        metadata = {"partial": "true"} if partial else {}
        if loss is not None:
            metadata["loss"] = repr(loss)
        return tensors_to_safetensors(gradients, metadata), {"Content-Type": SAFETENSORS_MEDIA_TYPE}
    document = {"gradients": wire_tensors(gradients, "named"), "partial": partial}
    if loss is not None:
        document["loss"] = loss
    return json_bytes(document), {"Content-Type": "application/json"}


def answer_params(response, *, binary: bool, dtype: str) -> dict[str, np.ndarray]:
    if binary:
        assert response.headers["content-type"] == SAFETENSORS_MEDIA_TYPE
        tensors, _ = tensors_from_safetensors(response.content)
        return tensors
    params = response.json()["params"]
    return {name: np.asarray(value, dtype=dtype) for name, value in params.items()}


def test_every_mix_of_forms_steps_exactly_as_the_core(module_app):
    rng = np.random.default_rng(7)
    params = random_arrays(rng, SHAPES, "float32")
    with module_app.client() as client:
        session = create_session(
            client,
            {
                "params": wire_tensors(params, "named"),
                "optimizer": {"type": "adam", "lr": 0.01},
                "dtype": "float32",
            },
        )
        reference = CoreRun(session, params)
        path = f"/v1/sessions/{session['id']}/step"
        forms = itertools.cycle(itertools.product([False, True], repeat=2))
        for step in range(1, 25):
            binary_in, binary_out = next(forms)
            gradients = random_arrays(rng, SHAPES, "float32")
            result = reference.step(gradients, loss=0.5)
            content, headers = step_request(gradients, binary=binary_in, loss=0.5)
            if binary_out:
                headers["Accept"] = SAFETENSORS_MEDIA_TYPE
            response = client.post(
                path, content=content, headers={**headers, **bearer(session["token"])}
            )
            assert response.status_code == 200, response.text
            assert response.headers["etag"] == f'"{step}"'
            got = answer_params(response, binary=binary_out, dtype="float32")
            for name in SHAPES:
                assert got[name].shape == SHAPES[name]
                np.testing.assert_array_equal(got[name], reference.params[name])
            if binary_out:
                _, metadata = tensors_from_safetensors(response.content)
                assert orjson.loads(metadata["step"]) == step
                assert orjson.loads(metadata["lr"]) == result.lr
                assert orjson.loads(metadata["grad_norm"]) == result.grad_norm
                assert orjson.loads(metadata["update_norm"]) == result.update_norm
                assert orjson.loads(metadata["skipped"]) is False
            else:
                assert response.json()["update_norm"] == result.update_norm


def test_single_form_takes_any_number_type_and_casts_it_to_the_session_dtype(module_app):
    rng = np.random.default_rng(3)
    theta = rng.standard_normal((2, 5))
    with module_app.client() as client:
        session = create_session(
            client, {"params": theta, "dtype": "float64", "optimizer": {"type": "rmsprop"}}
        )
        reference = CoreRun(session, {"params": theta})
        headers = {**bearer(session["token"]), "Content-Type": SAFETENSORS_MEDIA_TYPE}
        path = f"/v1/sessions/{session['id']}/step"
        files = [
            safetensors.numpy.save({"params": rng.standard_normal((2, 5)).astype(np.float32)}),
            safetensors.numpy.save({"params": rng.standard_normal((2, 5)).astype(np.float16)}),
            safetensors.numpy.save({"params": rng.integers(-3, 3, (2, 5), dtype=np.int32)}),
            # what a PyTorch user sends: bf16, with the metadata torch's tools write
            safetensors.torch.save(
                {"params": torch.randn(2, 5).to(torch.bfloat16)}, metadata={"format": "pt"}
            ),
        ]
        for file in files:
            (sent,) = safetensors.torch.load(file).values()
            reference.step({"params": sent.double().numpy()})
            response = client.post(path, content=file, headers=headers)
            assert response.status_code == 200, response.text
            got = np.asarray(response.json()["params"], dtype=np.float64)
            np.testing.assert_array_equal(got, reference.params["params"])

        answer = client.get(
            f"/v1/sessions/{session['id']}/params",
            headers={**bearer(session["token"]), "Accept": SAFETENSORS_MEDIA_TYPE},
        )
        assert answer.status_code == 200
        assert answer.headers["etag"] == '"4"'
        tensors, metadata = tensors_from_safetensors(answer.content)
        assert metadata == {"step": "4"}
        assert list(tensors) == ["params"] and tensors["params"].dtype == np.float64
        np.testing.assert_array_equal(tensors["params"], reference.params["params"])
        # and what the safetensors library itself reads from it
        np.testing.assert_array_equal(
            safetensors.numpy.load(answer.content)["params"], reference.params["params"]
        )


def test_metadata_carries_loss_and_partial(module_app):
    params = {"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)}
    with module_app.client() as client:
        session = create_session(client, {"params": params, "optimizer": {"type": "adam"}})
        reference = CoreRun(session, params)
        auth = bearer(session["token"])
        path = f"/v1/sessions/{session['id']}/step"
        gradient = {"a": np.array([0.5, -1.0, 2.0], np.float32)}
        reference.step(gradient, loss=0.25, partial=True)
        content, headers = step_request(gradient, binary=True, loss=0.25, partial=True)
        response = client.post(path, content=content, headers={**headers, **auth})
        assert response.status_code == 200, response.text
        got = answer_params(response, binary=False, dtype="float32")
        np.testing.assert_array_equal(got["a"], reference.params["a"])
        np.testing.assert_array_equal(got["b"], params["b"])  # untouched, as its state

        view = client.get(f"/v1/sessions/{session['id']}", headers=auth).json()
        assert view["last_loss"] == 0.25
        history = client.get(f"/v1/sessions/{session['id']}/history", headers=auth).json()
        assert history["records"][-1]["loss"] == 0.25

        nan_loss = tensors_to_safetensors(gradient, {"loss": "NaN", "partial": "true"})
        response = client.post(
            path, content=nan_loss, headers={**auth, "Content-Type": SAFETENSORS_MEDIA_TYPE}
        )
        assert response.status_code == 200, response.text
        assert client.get(f"/v1/sessions/{session['id']}", headers=auth).json()["step"] == 2


def test_return_none_answers_a_file_without_tensors(module_app):
    with module_app.client() as client:
        session = create_session(client, {"params": [1.0, 2.0], "optimizer": {"type": "sgd"}})
        content, headers = step_request({"params": np.ones(2, np.float32)}, binary=True)
        response = client.post(
            f"/v1/sessions/{session['id']}/step?return=none",
            content=content,
            headers={**headers, **bearer(session["token"]), "Accept": SAFETENSORS_MEDIA_TYPE},
        )
        assert response.status_code == 200, response.text
        tensors, metadata = tensors_from_safetensors(response.content)
        assert tensors == {}
        assert orjson.loads(metadata["step"]) == 1
        assert orjson.loads(metadata["lr"]) == 1e-3


@pytest.mark.parametrize("accept", ["application/json", SAFETENSORS_MEDIA_TYPE])
def test_a_binary_step_with_an_idempotency_key_is_applied_once(module_app, accept):
    with module_app.client() as client:
        session = create_session(client, {"params": [1.0, 2.0], "optimizer": {"type": "sgd"}})
        content, headers = step_request({"params": np.ones(2, np.float32)}, binary=True)
        headers = {
            **headers,
            **bearer(session["token"]),
            "Accept": accept,
            "Idempotency-Key": "binary-once",
        }
        path = f"/v1/sessions/{session['id']}/step"
        first = client.post(path, content=content, headers=headers)
        again = client.post(path, content=content, headers=headers)
        assert first.status_code == again.status_code == 200, first.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        assert again.headers["content-type"] == first.headers["content-type"]
        view = client.get(f"/v1/sessions/{session['id']}", headers=bearer(session["token"]))
        assert view.json()["step"] == 1


LARGE = 400_000
"""float32 elements of a tensor whose safetensors answer (1.6 MB) passes a send piece (1 MiB):
such an answer is streamed from the arrays, not joined into one bytes object."""


def large_binary_steps(app: InProcessServer, key: str | None = None) -> None:
    """Three large binary steps, each answered in safetensors with its `Content-Length`, each
    answer θ as the core computes it at that step (the next step does not change an answer
    already made); with an `Idempotency-Key`, a repeat of the last gets the same bytes."""
    rng = np.random.default_rng(11)
    params = {"w": rng.standard_normal(LARGE).astype(np.float32)}
    with app.client() as client:
        session = create_session(
            client,
            {"params": wire_tensors(params, "named"), "optimizer": {"type": "adam", "lr": 0.01}},
        )
        reference = CoreRun(session, params)
        path = f"/v1/sessions/{session['id']}/step"
        for step in range(1, 4):
            gradients = {"w": rng.standard_normal(LARGE).astype(np.float32)}
            reference.step(gradients)
            content, headers = step_request(gradients, binary=True)
            headers = {**headers, **bearer(session["token"]), "Accept": SAFETENSORS_MEDIA_TYPE}
            if key is not None:
                headers["Idempotency-Key"] = f"{key}-{step}"
            response = client.post(path, content=content, headers=headers)
            assert response.status_code == 200, response.text
            assert int(response.headers["content-length"]) == len(response.content) > 1 << 20
            tensors, metadata = tensors_from_safetensors(response.content)
            assert orjson.loads(metadata["step"]) == step
            np.testing.assert_array_equal(tensors["w"], reference.params["w"])
        if key is not None:
            again = client.post(path, content=content, headers=headers)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == response.content


@pytest.mark.parametrize("key", [None, "large"])
def test_a_large_binary_answer_shows_its_step_on_a_database(module_app, key):
    large_binary_steps(module_app, key)


@pytest.mark.parametrize("key", [None, "large"])
def test_a_large_binary_answer_shows_its_step_in_memory(key):
    with InProcessServer("memory://") as app:
        large_binary_steps(app, key)

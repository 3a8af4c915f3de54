"""The Python client on the state paths, against a live server: sparse row gradients (sent and
received as `SparseRows`; `RemoteOptimizer` with `nn.Embedding(sparse=True)` trains as torch's
own sparse optimizers do), the eval view (`params(for_eval=True)`, `RemoteOptimizer.eval()` and
`train()`), exports that carry the learning-rate-free types' globals."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from optaas_client import Client, RemoteOptimizer, SparseRows


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """schedulefree keeps its scalars in torch's default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


pytestmark = pytest.mark.slow


@pytest.fixture
def client(module_server):
    with Client(module_server.url, trust_env=False) as client:
        yield client


@pytest.fixture
def binary_client(module_server):
    with Client(module_server.url, trust_env=False, binary_threshold=1) as client:
        yield client


class Recommender(torch.nn.Module):
    """An embedding table (sparse gradients) and a dense head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.table = torch.nn.Embedding(40, 4, sparse=True)
        self.head = torch.nn.Linear(4, 1)
        self.double()

    def forward(self, ids):
        return self.head(self.table(ids).mean(dim=1)).squeeze(-1)


def batches(count, seed=3):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        ids = torch.randint(0, 30, (8, 5), generator=generator)  # rows 30-39 stay untouched
        yield ids, torch.randn(8, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
@pytest.mark.parametrize(
    ("spec", "local"),
    [
        ({"type": "adagrad", "lr": 0.1}, lambda p: torch.optim.Adagrad(p, lr=0.1, foreach=False)),
        ({"type": "sgd", "lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1)),
    ],
    ids=["adagrad", "sgd"],
)
def test_remote_optimizer_trains_an_embedding_table_as_torch_does(
    client, binary_client, binary, spec, local
):
    """Embedding(sparse=True) gradients go as rows and only changed rows come back; after 30
    steps every weight agrees with torch's own optimizer (1e-9 relative), and rows no batch
    touched are exactly θ₀."""
    remote_model, local_model = Recommender(), Recommender()
    theta0 = remote_model.table.weight.detach().clone()
    remote = RemoteOptimizer(
        remote_model.named_parameters(),
        client=binary_client if binary else client,
        optimizer=spec,
    )
    reference = local(local_model.parameters())
    touched = set()
    for ids, targets in batches(30):
        touched.update(ids.reshape(-1).tolist())
        for model, optimizer in ((remote_model, remote), (local_model, reference)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(ids), targets).backward()
            assert model.table.weight.grad.is_sparse
            optimizer.step()
    for (name, ours), theirs in zip(
        remote_model.named_parameters(), local_model.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-15, msg=name)
    untouched = sorted(set(range(40)) - touched)
    assert untouched, "the batches touched every row: the test proves nothing about the rest"
    assert torch.equal(remote_model.table.weight[untouched], theta0[untouched])
    served = remote.session.params()
    np.testing.assert_array_equal(served["table.weight"], remote_model.table.weight.detach())


@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
def test_a_session_step_with_sparse_rows_answers_the_changed_rows(client, binary):
    table = np.zeros((6, 2))
    session = client.create_session(
        {"table": table, "bias": np.zeros(2)}, optimizer={"type": "sgd", "lr": 1.0}
    )
    gradients = {"table": SparseRows(np.array([4, 1, 4]), np.ones((3, 2))), "bias": np.ones(2)}
    answer = session.step(gradients, binary=binary)
    assert isinstance(answer["table"], SparseRows)
    np.testing.assert_array_equal(answer["table"].rows, [1, 4])
    np.testing.assert_array_equal(answer["table"].values, [[-1.0, -1.0], [-2.0, -2.0]])
    np.testing.assert_array_equal(answer["bias"], [-1.0, -1.0])
    answer["table"].apply_to(table)
    np.testing.assert_array_equal(table, session.params()["table"])
    whole = session.step(gradients, binary=binary, return_params="full")
    np.testing.assert_array_equal(whole["table"], session.params()["table"])


def test_the_eval_view_of_a_type_without_one_is_theta_and_eval_mode_refuses_steps(client):
    model = torch.nn.Linear(3, 2).double()
    remote = RemoteOptimizer(model.named_parameters(), client=client, optimizer="adam")
    model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    remote.step()
    theta = remote.session.params()
    for_eval = remote.session.params(for_eval=True)
    for name in theta:
        np.testing.assert_array_equal(for_eval[name], theta[name])
    remote.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        remote.step()
    remote.train()
    remote.step()
    assert remote.session.step_count == 2


def test_remote_optimizer_eval_swaps_in_schedulefrees_x(client):
    """A model trained through a schedule_free_adamw session: eval() puts schedulefree's x in
    the model (1e-7 relative in x − θ₀), train() puts y back, and training goes on."""
    import schedulefree

    remote_model, local_model = torch.nn.Linear(4, 2).double(), torch.nn.Linear(4, 2).double()
    local_model.load_state_dict(remote_model.state_dict())
    start = {name: p.detach().clone() for name, p in remote_model.named_parameters()}
    remote = RemoteOptimizer(
        remote_model.named_parameters(),
        client=client,
        optimizer={"type": "schedule_free_adamw", "lr": 0.05},
    )
    with torch_default_dtype(torch.float64):
        local = schedulefree.AdamWScheduleFree(local_model.parameters(), lr=0.05)
    local.train()
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(32, 2, generator=generator, dtype=torch.float64)
    for _ in range(20):
        for model, optimizer in ((remote_model, remote), (local_model, local)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(inputs), targets).backward()
            with torch_default_dtype(torch.float64):
                optimizer.step()
    remote.eval()
    local.eval()
    for (name, ours), theirs in zip(
        remote_model.named_parameters(), local_model.parameters(), strict=True
    ):
        torch.testing.assert_close(
            ours - start[name], theirs - start[name], rtol=1e-7, atol=1e-12, msg=name
        )
    remote.train()
    y = remote.session.params()
    for name, tensor in remote_model.named_parameters():
        np.testing.assert_array_equal(tensor.detach().numpy(), y[name])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "safetensors"])
def test_client_exports_carry_the_globals_and_an_import_continues_exactly(
    client, binary_client, binary
):
    rng = np.random.default_rng(2)
    theta0 = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    grads = [{name: rng.standard_normal(v.shape) for name, v in theta0.items()} for _ in range(20)]
    session = client.create_session(theta0, optimizer="prodigy")
    for g in grads[:10]:
        session.step(g)
    export = session.export(binary=binary)
    assert set(export["globals"]) == {"d", "d_max", "d_numerator", "k"}
    assert int(export["globals"]["k"]) == 10
    copy = (binary_client if binary else client).import_session(export)
    for g in grads[10:]:
        ours, theirs = session.step(g), copy.step(g)
    for name in theta0:
        np.testing.assert_array_equal(ours[name], theirs[name])

"""The Python client on the state paths, against a live server: sparse row gradients (sent and
received as `SparseRows`; `RemoteOptimizer` with `nn.Embedding(sparse=True)` trains as torch's
own sparse optimizers do), the eval view (`params(for_eval=True)`, `RemoteOptimizer.eval()` and
`train()`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optaas_client import Client, RemoteOptimizer, SparseRows

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

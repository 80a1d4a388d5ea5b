"""The suite's own machinery, which `make test` relies on."""
import pytest

pytestmark = pytest.mark.xdist_group("suite")


def test_xdist_keeps_a_group_on_one_worker(request):
    """--dist loadgroup sends a group to one worker by a suffix it writes into each nodeid; a pytest that ignores
    the suffix (9.2, with pytest-xdist 3.8) splits every group across the workers without a word: the browser
    module then ran on both workers, each half against an app of its own, and module fixtures were made twice."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run under pytest -n <workers> --dist loadgroup")
    assert request.node.nodeid.endswith("@suite"), (request.node.nodeid, pytest.__version__)

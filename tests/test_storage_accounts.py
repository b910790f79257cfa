"""One Azurite, several storage accounts: what the suite's processes rely on to share two Azurites."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError

from sandbox.azurite import DEV_ACCOUNT, Azurite
from shared.queues import REQUESTS, Storage
from shared.settings import Settings


def test_accounts_on_one_azurite_keep_their_queues_apart(tmp_path) -> None:
    """A message sent in one account is not in the other's queue, and the development account is not served."""
    emulator = Azurite.on_free_ports(tmp_path, in_memory=True, accounts=("exoprovgw0", "exoprovgw1"))
    emulator.start()
    try:
        first, second = (
            Storage(Settings.from_env({"AzureWebJobsStorage": emulator.account_connection_string(account)}))
            for account in emulator.accounts
        )
        first.ensure()
        second.ensure()
        first.send(REQUESTS, "for the first account only")
        assert (first.pending((REQUESTS,)), second.pending((REQUESTS,))) == (1, 0)
        development = Storage(
            Settings.from_env({"AzureWebJobsStorage": emulator.account_connection_string(DEV_ACCOUNT)})
        )
        with pytest.raises(ResourceNotFoundError, match="ResourceNotFound"):  # Azurite's answer to an unknown account
            development.ensure()
    finally:
        emulator.stop()

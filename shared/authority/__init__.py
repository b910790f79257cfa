"""Moving the source of authority of synced groups and contacts to the cloud (Graph `onPremisesSyncBehavior`).

`read` lists a kind and reads each object's state and nesting in `$batch`es, `plan` orders the candidates
children first, `apply` writes them level by level (journaled, read back), `sweep` ties the three together for
one kind of a sweep run, and `undo` takes a run's conversions back. Mailboxes stay in `shared/enforcement.py`:
they are cloud-managed through Exchange, not through Graph.
"""

__all__: list[str] = []

"""The top floor: the CLI, the composition root that assembles each role
(``runtime``, ``wiring``) and the operator commands.

It may import anything; nothing imports it (the import contract in
``.importlinter``, run by ``make check``).
"""

"""Imported by the pipeline's forkserver when it starts (multiprocessing's forkserver preload),
and by nothing else: it ties the forkserver's life to the server's, and its workers' lives to its
own (avatars/_process_guard.py). Importing it in the server itself would tie the server to
whatever started it."""

from avatars._process_guard import die_with_parent, expect_children

die_with_parent()
expect_children()  # the workers it forks check that it is still their parent

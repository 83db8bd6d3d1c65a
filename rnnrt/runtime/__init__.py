"""Runtime: the Session (state core) and the StreamPool over it."""

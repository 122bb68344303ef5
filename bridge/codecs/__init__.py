"""Frames to bytes: encodings computed once per frame and shared by the sinks that need them."""

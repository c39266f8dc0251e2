"""Servers a run starts for itself: the emulator, or a real llama.cpp engine, each in a child process."""

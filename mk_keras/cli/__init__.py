"""Thin absl binaries: parse flags, call the library."""

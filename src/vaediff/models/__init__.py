"""Networks, each built from one frozen config dataclass; they know nothing of training or files."""

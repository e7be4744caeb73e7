"""Data loading: STS pair data sets and BEIR retrieval data sets."""

from haystack_crossrerank.data.sts import PairData, load_pair_file, load_sts

__all__ = ["PairData", "load_pair_file", "load_sts"]

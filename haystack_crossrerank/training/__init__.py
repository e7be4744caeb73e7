"""Fine-tuning cross-encoders: STS (the seed's recipe) and retrieval."""

from haystack_crossrerank.training.sts import train_sts
from haystack_crossrerank.training.trainer import TrainConfig, TrainResult, train_cross_encoder

__all__ = ["TrainConfig", "TrainResult", "train_cross_encoder", "train_sts"]

"""Datasets: Minari in, validated arrays out, then subsampled and batched for the algorithms."""

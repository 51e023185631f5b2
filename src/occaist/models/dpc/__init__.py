"""Differentiable point clouds (Insafutdinov & Dosovitskiy, NeurIPS 2018): shape and pose."""

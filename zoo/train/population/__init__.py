"""Population training: K models of one zoo trained at once as one vectorized model, each member
ending in its own run dir as if trained alone.

    stacked   what MLP populations share: members, stacked [K, out, in] layers, step schedules
    mlp       MLP classifiers (hand-written batched forward/backward, SGD)
    pinn      convection PINNs (stacked layers through autograd, Adam)
    nets      ResNets, ViTs, GPTs (torch's autograd and optimizers on stacked tensors), stacked by
    grouped   grouped convolutions (ResNets) or
    vmapped   torch.func.vmap (any architecture)
    runner    the Lightning fit, the members' run dirs, resume state, divergence
"""

from zoo.train.population.runner import PopulationWriter, build_population, population_dir, train_population

__all__ = ["PopulationWriter", "build_population", "population_dir", "train_population"]

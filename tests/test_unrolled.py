import torch

from hf_distill import build_learner
from hf_distill.methods import learner_logits, unroll


def setup(seed=0):
    torch.manual_seed(seed)
    learner = build_learner("convnet", 3, image_size=8, width=4).eval()
    params = {k: v.detach().clone() for k, v in learner.named_parameters()}
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    y = torch.softmax(torch.randn(3, 3), -1).requires_grad_()
    lrs = torch.full((6,), 0.1, requires_grad=True)
    real_x, real_y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    return learner, params, x, y, lrs, real_x, real_y


def outer_grads(backprop_steps):
    learner, params, x, y, lrs, real_x, real_y = setup()
    trained = unroll(learner, params, x, None, y, lrs, backprop_steps=backprop_steps)
    loss = torch.nn.functional.cross_entropy(learner_logits(learner, trained, real_x), real_y)
    return torch.autograd.grad(loss, [x, y, lrs])


def test_truncation_over_all_steps_equals_full_backprop():
    for full, truncated in zip(outer_grads(None), outer_grads(6)):
        assert torch.allclose(full, truncated)


def test_truncation_reaches_only_the_last_steps():
    _, _, lr_grad = outer_grads(2)
    assert (lr_grad[:4] == 0).all() and (lr_grad[4:] != 0).all()


def test_unroll_without_graph_trains_the_learner():
    learner, params, x, _, lrs, _, _ = setup()
    labels = torch.arange(3)
    before = torch.nn.functional.cross_entropy(learner_logits(learner, params, x), labels)
    trained = unroll(learner, params, x.detach(), None, labels, lrs.detach(), create_graph=False)
    after = torch.nn.functional.cross_entropy(learner_logits(learner, trained, x), labels)
    assert after < before and not any(v.requires_grad for v in trained.values())


def test_per_tensor_step_sizes_move_each_tensor_by_its_own_rate():
    learner, params, x, y, lrs, real_x, real_y = setup()
    per_tensor = lrs.detach()[:, None].repeat(1, len(params))  # [steps, tensors], the same rate everywhere
    same = unroll(learner, params, x.detach(), None, y.detach(), per_tensor, create_graph=False)
    scalar = unroll(learner, params, x.detach(), None, y.detach(), lrs.detach(), create_graph=False)
    assert all(torch.allclose(same[k], scalar[k]) for k in params)

    frozen = next(iter(params))  # a zero rate for the first tensor at every step leaves it where it started
    per_tensor[:, 0] = 0
    trained = unroll(learner, params, x.detach(), None, y.detach(), per_tensor, create_graph=False)
    assert torch.equal(trained[frozen], params[frozen])
    assert all(not torch.equal(trained[k], params[k]) for k in list(params)[1:] if k.endswith("weight"))


def test_per_tensor_step_sizes_each_get_an_outer_gradient():
    learner, params, x, y, _, real_x, real_y = setup()
    lrs = torch.full((6, len(params)), 0.1, requires_grad=True)
    trained = unroll(learner, params, x, None, y, lrs)
    loss = torch.nn.functional.cross_entropy(learner_logits(learner, trained, real_x), real_y)
    (lr_grad,) = torch.autograd.grad(loss, [lrs])
    assert lr_grad.shape == (6, len(params)) and (lr_grad.abs().sum(0) > 0).all()


def test_adam_unroll_takes_torch_adams_steps():
    # LeNet: the ConvNet's instance norm cancels its conv biases' gradients, leaving rounding noise that Adam scales up
    torch.manual_seed(0)
    learner = build_learner("lenet", 3, image_size=16).eval()
    params = {k: v.detach().clone() for k, v in learner.named_parameters()}
    x, y = torch.randn(3, 1, 16, 16), torch.softmax(torch.randn(3, 3), -1)
    rates = torch.tensor([0.01, 0.03, 0.02, 0.05, 0.01, 0.02])
    trained = unroll(learner, params, x, None, y, rates, create_graph=False, optimizer="adam")
    weights = {k: v.clone().requires_grad_() for k, v in params.items()}
    adam = torch.optim.Adam(weights.values(), lr=0.0)
    for rate in rates.tolist():
        adam.param_groups[0]["lr"] = rate
        adam.zero_grad()
        soft = -(y * torch.log_softmax(learner_logits(learner, weights, x), -1)).sum(-1).mean()
        soft.backward()
        adam.step()
    assert all(torch.allclose(trained[k], weights[k], atol=1e-5) for k in params)
    plain = unroll(learner, params, x, None, y, rates, create_graph=False)
    assert not all(torch.allclose(trained[k], plain[k], atol=1e-3) for k in params)


def test_adam_unroll_truncated_over_all_steps_equals_full_backprop():
    grads = []
    for backprop_steps in (None, 6, 2):
        learner, params, x, y, lrs, real_x, real_y = setup()
        lrs = (lrs / 10).detach().requires_grad_()
        trained = unroll(learner, params, x, None, y, lrs, backprop_steps=backprop_steps, optimizer="adam")
        loss = torch.nn.functional.cross_entropy(learner_logits(learner, trained, real_x), real_y)
        grads.append(torch.autograd.grad(loss, [x, y, lrs]))
    for full, truncated in zip(*grads[:2]):
        assert torch.isfinite(full).all() and torch.allclose(full, truncated)
    last_two = grads[2][2]
    assert (last_two[:4] == 0).all() and (last_two[4:] != 0).all()
    assert not torch.allclose(grads[0][0], grads[2][0])  # a window of 2 steps sees less of the path


def test_augmented_unroll_trains_step_t_on_augment_of_the_inputs_and_reaches_them():
    learner, params, x, y, lrs, real_x, real_y = setup()
    shift = lambda inputs, t: inputs.roll(t, dims=3)  # noqa: E731 (a different input at every step)
    trained = unroll(learner, params, x, None, y, lrs, augment=shift)
    stepwise = params  # one step at a time, on the inputs that step should see
    for t in range(len(lrs)):
        stepwise = unroll(learner, stepwise, shift(x, t), None, y, lrs[t : t + 1])
    for k in params:
        assert torch.allclose(trained[k], stepwise[k], atol=1e-6)
    plain = unroll(learner, params, x, None, y, lrs)
    assert not all(torch.allclose(trained[k], plain[k], atol=1e-4) for k in params)

    flipped = unroll(learner, params, x, None, y, lrs, augment=lambda inputs, t: inputs.flip(3))
    loss = torch.nn.functional.cross_entropy(learner_logits(learner, flipped, real_x), real_y)
    (grad,) = torch.autograd.grad(loss, [x])
    x_flipped = x.detach().flip(3).requires_grad_()  # the same unroll on flipped inputs, no augmentation
    trained = unroll(learner, params, x_flipped, None, y, lrs)
    loss = torch.nn.functional.cross_entropy(learner_logits(learner, trained, real_x), real_y)
    (expected,) = torch.autograd.grad(loss, [x_flipped])
    assert grad.abs().sum() > 0 and torch.allclose(grad, expected.flip(3), atol=1e-6)

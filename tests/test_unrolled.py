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

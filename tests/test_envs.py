"""Environment dynamics checked against hand-worked cases (PAPER.md section 2)."""

import copy

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from mbgen.envs import buttongrid as bg
from mbgen.envs import procmaze as pm
from mbgen.envs import wallgrid as wg
from mbgen.envs.grid import DOWN, LEFT, RIGHT, STAY, UP

from mbgen import envs

ALL = [
    ("panflute", {"num_pipes": 4}),
    ("buttongrid", {"grid_size": 5, "num_buttons": 2}),
    ("procmaze", {"grid_size": 5}),
    ("opengrid", {"grid_size": 4}),
    ("wallgrid3x3", {"walls": [[1, 0], [1, 1]]}),
]


# ---------------------------------------------------------------- PanFlute
def run_policy(env, policy, steps):
    obs = env.reset()
    rewards = np.zeros((steps, env.num_envs), dtype=np.float32)
    for t in range(steps):
        _, rewards[t], _, obs = env.step(policy(t, obs))
    return rewards


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 9])
def test_panflute_optimal_cycle_earns_exactly_one_over_n(n):
    env = envs.make("panflute", 2, 0, num_pipes=n, spontaneous=False)
    # Pipe i needs i shifts to reach its end, so activate pipes n-1, n-2, ..., 0 in turn.
    rewards = run_policy(env, lambda t, obs: np.full(2, n - 1 - t % n), 10 * n + n)
    assert rewards[:n].sum() == 0  # the first reward needs a full cycle
    assert rewards[n:].mean() == pytest.approx(1.0 / n, abs=0)


@pytest.mark.parametrize("n", [2, 3])
def test_panflute_random_rate_is_one_over_n_to_the_n(n):
    env = envs.make("panflute", 512, 1, num_pipes=n, spontaneous=False)
    rng = np.random.default_rng(0)
    rewards = run_policy(env, lambda t, obs: rng.integers(0, n, 512), 1000)
    expected = 1.0 / n**n
    sigma = np.sqrt(expected * (1 - expected) / rewards.size)
    assert abs(rewards.mean() - expected) < 6 * sigma


def test_panflute_layout_and_single_step_by_hand():
    env = envs.make("panflute", 1, 0, num_pipes=3, spontaneous=False)
    # pipes: [p0c0] [p1c0 p1c1] [p2c0 p2c1 p2c2]; cell 0 is the bottom.
    obs = np.array([[1, 1, 0, 0, 1, 1]], dtype=bool)
    next_obs, reward, terminal = env.transition(obs, np.array([1]), np.random.default_rng())
    assert next_obs.astype(int).tolist() == [[0, 1, 1, 0, 0, 1]]
    assert reward.tolist() == [0.0] and terminal.tolist() == [False]
    all_ends = np.array([[1, 0, 1, 0, 0, 1]], dtype=bool)
    _, reward, _ = env.transition(all_ends, np.array([0]), np.random.default_rng())
    assert reward.tolist() == [1.0]


def test_panflute_spontaneous_rate_is_one_over_n_squared():
    n, k = 3, 200_000
    env = envs.make("panflute", 1, 0, num_pipes=n)
    obs = np.zeros((k, env.obs_dim), dtype=bool)
    next_obs, _, _ = env.transition(obs, np.zeros(k, dtype=np.int64), np.random.default_rng(5))
    fired = next_obs[:, env.layout[1]].all(axis=1).mean()
    p = 1 / n**2
    assert abs(fired - p) < 6 * np.sqrt(p * (1 - p) / k)


# -------------------------------------------------------------- ButtonGrid
def button_obs(n, player, buttons_on=(), buttons_off=()):
    obs = np.zeros((1, n * n * 3), dtype=bool)
    obs[0, (player[0] * n + player[1]) * 3 + bg.PLAYER] = True
    for r, c in buttons_on:
        obs[0, (r * n + c) * 3 + bg.BUTTON_ON] = True
    for r, c in buttons_off:
        obs[0, (r * n + c) * 3 + bg.BUTTON_OFF] = True
    return obs


def test_buttongrid_moving_onto_a_button_toggles_it():
    env = envs.make("buttongrid", 1, 0, grid_size=5, num_buttons=2, spontaneous=False)
    obs = button_obs(5, (0, 0), buttons_off=[(0, 1), (3, 3)])
    next_obs, reward, _ = env.transition(obs, np.array([RIGHT]), env.rng)
    assert (next_obs == button_obs(5, (0, 1), buttons_on=[(0, 1)], buttons_off=[(3, 3)])).all()
    assert reward.tolist() == [0.0]
    # moving onto it again (leave, come back) toggles it off
    away, _, _ = env.transition(next_obs, np.array([DOWN]), env.rng)
    back, _, _ = env.transition(away, np.array([UP]), env.rng)
    assert (back == button_obs(5, (0, 1), buttons_off=[(0, 1), (3, 3)])).all()


def test_buttongrid_bumping_a_wall_or_staying_on_a_button_does_not_toggle():
    env = envs.make("buttongrid", 1, 0, grid_size=5, num_buttons=2, spontaneous=False)
    obs = button_obs(5, (0, 0), buttons_off=[(0, 0), (2, 2)])
    for action in (STAY, UP, LEFT):  # up and left bump the edge of the grid
        next_obs, _, _ = env.transition(obs, np.array([action]), env.rng)
        assert (next_obs == obs).all()


def test_buttongrid_reward_arrives_the_step_after_all_are_on_then_layout_resets():
    env = envs.make("buttongrid", 1, 0, grid_size=5, num_buttons=2, spontaneous=False)
    obs = button_obs(5, (2, 1), buttons_on=[(0, 0)], buttons_off=[(2, 2)])
    all_on, reward, _ = env.transition(obs, np.array([RIGHT]), env.rng)
    assert reward.tolist() == [0.0]
    assert (all_on == button_obs(5, (2, 2), buttons_on=[(0, 0), (2, 2)])).all()
    fresh, reward, terminal = env.transition(all_on, np.array([STAY]), env.rng)
    assert reward.tolist() == [1.0] and terminal.tolist() == [False]
    assert fresh[0, bg.BUTTON_ON :: 3].sum() == 0 and fresh[0, bg.BUTTON_OFF :: 3].sum() == 2
    assert fresh[0, bg.PLAYER :: 3].sum() == 1


def test_buttongrid_spontaneous_event_turns_all_buttons_on_at_its_rate():
    k = 100_000
    env = envs.make("buttongrid", 1, 0, grid_size=5, num_buttons=3)
    obs = np.repeat(button_obs(5, (4, 4), buttons_off=[(0, 0), (1, 1), (2, 2)]), k, axis=0)
    next_obs, _, _ = env.transition(obs, np.zeros(k, dtype=np.int64), np.random.default_rng(3))
    fired = next_obs[:, bg.BUTTON_OFF :: 3].sum(axis=1) == 0
    assert (next_obs[fired, bg.BUTTON_ON :: 3].sum(axis=1) == 3).all()
    p = 1 / (10 * 25)
    assert abs(fired.mean() - p) < 6 * np.sqrt(p * (1 - p) / k)


# ---------------------------------------------------------------- ProcMaze
def open_cells_form_a_tree(obs, n):
    is_open = obs[pm.EMPTY :: 4].reshape(n, n)
    assert (is_open == ~obs[pm.WALL :: 4].reshape(n, n)).all()
    cells = [tuple(c) for c in np.argwhere(is_open)]
    edges = sum(
        1 for r, c in cells for dr, dc in ((0, 1), (1, 0)) if r + dr < n and c + dc < n and is_open[r + dr, c + dc]
    )
    seen, stack = {cells[0]}, [cells[0]]
    while stack:
        r, c = stack.pop()
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            m = (r + dr, c + dc)
            if 0 <= m[0] < n and 0 <= m[1] < n and is_open[m] and m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen) == len(cells) and edges == len(cells) - 1


@pytest.mark.parametrize("n", range(2, 11))
def test_procmaze_open_cells_form_a_tree(n):
    env = envs.make("procmaze", 40, n, grid_size=n)
    for obs in env.reset():
        assert open_cells_form_a_tree(obs, n)
        player, goal = obs[pm.PLAYER :: 4], obs[pm.GOAL :: 4]
        assert player.sum() == 1 and goal.sum() == 1
        assert obs[pm.EMPTY :: 4][player.argmax()] and obs[pm.EMPTY :: 4][goal.argmax()]


def maze_obs(n, walls, player, goal):
    obs = np.zeros((1, n * n * 4), dtype=bool)
    wall = np.zeros(n * n, dtype=bool)
    wall[[r * n + c for r, c in walls]] = True
    obs[0, pm.WALL :: 4] = wall
    obs[0, pm.EMPTY :: 4] = ~wall
    obs[0, (player[0] * n + player[1]) * 4 + pm.PLAYER] = True
    obs[0, (goal[0] * n + goal[1]) * 4 + pm.GOAL] = True
    return obs


def test_procmaze_episode_ends_on_the_step_after_the_goal():
    env = envs.make("procmaze", 1, 0, grid_size=3, spontaneous=False)
    obs = maze_obs(3, [(1, 1)], player=(0, 1), goal=(0, 0))
    at_goal, reward, terminal = env.transition(obs, np.array([LEFT]), env.rng)
    assert (at_goal == maze_obs(3, [(1, 1)], player=(0, 0), goal=(0, 0))).all()
    assert reward.tolist() == [-1.0] and terminal.tolist() == [False]
    _, reward, terminal = env.transition(at_goal, np.array([RIGHT]), env.rng)
    assert reward.tolist() == [-1.0] and terminal.tolist() == [True]


def test_procmaze_walls_block():
    env = envs.make("procmaze", 1, 0, grid_size=3, spontaneous=False)
    obs = maze_obs(3, [(1, 1)], player=(1, 0), goal=(2, 2))
    next_obs, _, _ = env.transition(obs, np.array([RIGHT]), env.rng)
    assert (next_obs == obs).all()
    next_obs, _, _ = env.transition(obs, np.array([DOWN]), env.rng)
    assert (next_obs == maze_obs(3, [(1, 1)], player=(2, 0), goal=(2, 2))).all()


@pytest.mark.parametrize("n,denominator", [(4, 10), (5, 17), (3, 7)])
def test_procmaze_teleport_rate(n, denominator):
    assert pm.teleport_probability(n) == pytest.approx(0.1 / denominator)
    k = 200_000
    env = envs.make("procmaze", 1, 0, grid_size=n)
    obs = np.repeat(maze_obs(n, [], player=(0, 0), goal=(n - 1, n - 1)), k, axis=0)
    next_obs, _, _ = env.transition(obs, np.full(k, STAY), np.random.default_rng(9))
    teleported = next_obs[:, ((n * n - 1) * 4) + pm.PLAYER].mean()
    p = 0.1 / denominator
    assert abs(teleported - p) < 6 * np.sqrt(p * (1 - p) / k)


def test_procmaze_step_resets_finished_episodes():
    env = envs.make("procmaze", 64, 2, grid_size=3)
    rng = np.random.default_rng(0)
    obs = env.reset()
    ended = 0
    for _ in range(300):
        next_obs, reward, terminal, obs = env.step(rng.integers(0, 5, 64))
        ended += terminal.sum()
        assert (reward == -1).all()
        kept = ~terminal
        assert (obs[kept] == next_obs[kept]).all()
    assert ended > 0


def test_opengrid_goal_is_bottom_right_and_moves_clip():
    env = envs.make("opengrid", 1, 0, grid_size=3, spontaneous=False)
    obs = np.zeros((1, 9), dtype=bool)
    obs[0, 7] = True  # (2, 1)
    at_goal, _, terminal = env.transition(obs, np.array([RIGHT]), env.rng)
    assert at_goal[0].argmax() == 8 and not terminal[0]
    clipped, _, terminal = env.transition(at_goal, np.array([DOWN]), env.rng)
    assert clipped[0].argmax() == 8 and terminal[0]


# ------------------------------------------------------------- WallGrid3x3
def test_wallgrid_basic_set_and_datasets():
    basic = wg.basic_set()
    assert len(wg.BASIC_LAYOUTS) == 8 and len(basic) == 8 * 7 * 5
    sizes = {c: len(wg.dataset(c)) for c in wg.COVERAGES}
    assert sizes == {"all": 280 + 2 * 30, "path": 280 + 2 * 6, "single": 280 + 2 * 5, "none": 280}
    # entering the goal ends the episode; every step costs 1
    assert (basic.reward == -1).all()
    assert basic.terminal.sum() > 0
    assert (basic.next_obs[basic.terminal][:, wg.AGENT].argmax(axis=1) == 0).all()


def eval_rows(data, walls):
    wall = np.zeros(9, dtype=bool)
    wall[[wg.flat(w) for w in walls]] = True
    return (data.obs[:, wg.WALL] == wall).all(axis=1)


def test_wallgrid_path_dataset_follows_the_path_only():
    lower = ((1, 0), (1, 1))
    data = wg.dataset("path")
    rows = eval_rows(data, lower)
    cells = [divmod(int(c), 3) for c in data.obs[rows][:, wg.AGENT].argmax(axis=1)]
    # bottom row rightwards, right column upwards, top row leftwards
    assert list(zip(cells, data.action[rows].tolist())) == [
        ((2, 0), RIGHT),
        ((2, 1), RIGHT),
        ((2, 2), UP),
        ((1, 2), UP),
        ((0, 2), LEFT),
        ((0, 1), LEFT),
    ]
    assert data.terminal[rows].tolist() == [False] * 5 + [True]


def test_wallgrid_single_cell_dataset_is_the_far_corner():
    for walls, corner in zip(wg.EVALUATION_LAYOUTS, [(2, 0), (0, 2)]):
        data = wg.dataset("single")
        rows = eval_rows(data, walls)
        assert rows.sum() == 5
        assert (data.obs[rows][:, wg.AGENT].argmax(axis=1) == wg.flat(corner)).all()
        assert sorted(data.action[rows].tolist()) == [0, 1, 2, 3, 4]
    assert not eval_rows(wg.dataset("none"), wg.EVALUATION_LAYOUTS[0]).any()


def test_wallgrid_optimal_actions():
    best = wg.optimal_actions(((1, 0), (1, 1)))
    assert np.flatnonzero(best[2, 1]).tolist() == [RIGHT]
    assert np.flatnonzero(best[0, 2]).tolist() == [LEFT]
    assert not best[1, 1].any() and not best[0, 0].any()
    open_grid = wg.optimal_actions(((2, 2),))
    assert np.flatnonzero(open_grid[1, 1]).tolist() == [UP, LEFT]
    assert wg.goal_distances(((1, 0), (1, 1)))[2, 0] == 6


def test_wallgrid_transition_matches_step():
    env = envs.make("wallgrid3x3", 3, 0, walls=[[0, 1], [1, 1]])
    obs = env.reset()
    assert not obs[:, wg.AGENT][:, [0, 1, 4]].any()  # never starts on the goal or a wall
    next_obs, reward, terminal = env.transition(obs, np.array([0, 1, 2]), env.rng)
    assert (reward == -1).all()


# --------------------------------------------------------- contract, seeds
@pytest.mark.parametrize("name,params", ALL)
def test_transition_equals_step_on_random_states(name, params):
    env = envs.make(name, 32, 7, **params)
    rng = np.random.default_rng(1)
    env.reset()
    for _ in range(200):
        state = env._obs.copy()
        actions = rng.integers(0, env.num_actions, 32)
        twin = copy.deepcopy(env.rng)
        expected = env.transition(state, actions, twin)
        next_obs, reward, terminal, _ = env.step(actions)
        assert (next_obs == expected[0]).all()
        assert (reward == expected[1]).all() and (terminal == expected[2]).all()
        assert next_obs.dtype == bool and reward.dtype == np.float32 and terminal.dtype == bool


@pytest.mark.parametrize("name,params", [p for p in ALL if p[0] != "buttongrid"])
def test_without_spontaneous_events_transition_needs_no_shared_randomness(name, params):
    env = envs.make(name, 32, 7, spontaneous=False, **params)
    rng = np.random.default_rng(1)
    env.reset()
    for _ in range(100):
        state = env._obs.copy()
        actions = rng.integers(0, env.num_actions, 32)
        expected = env.transition(state, actions, np.random.default_rng(12345))
        next_obs, reward, terminal, _ = env.step(actions)
        assert (next_obs == expected[0]).all() and (reward == expected[1]).all()


@pytest.mark.parametrize("name,params", ALL)
def test_same_seed_same_trajectory(name, params):
    runs = []
    for _ in range(2):
        env = envs.make(name, 8, 42, **params)
        rng = np.random.default_rng(3)
        trace = [env.reset()]
        for _ in range(100):
            trace.append(env.step(rng.integers(0, env.num_actions, 8))[0])
        runs.append(np.stack(trace))
    assert (runs[0] == runs[1]).all()
    other = envs.make(name, 8, 43, **params)
    if name != "panflute":  # PanFlute always starts all-off
        assert not (other.reset() == runs[0][0]).all()


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("nosuchenv", {}, "unknown environment 'nosuchenv'; choose one of: panflute"),
        ("panflute", {"num_pipes": 0}, "num_pipes must be an integer >= 1, got 0"),
        ("buttongrid", {"grid_size": 5, "num_buttons": 26}, r"num_buttons must be an integer in \[1, 25\], got 26"),
        ("procmaze", {"grid_size": 1}, "grid_size must be an integer >= 2, got 1"),
        ("opengrid", {"grid_size": 1.5}, "grid_size must be an integer >= 2"),
        ("wallgrid3x3", {"walls": [[0, 0]]}, "a wall may not be on the goal cell"),
        ("wallgrid3x3", {"walls": [[3, 0]]}, r"row and col in \[0, 2\]"),
        ("procmaze", {"size": 4}, "procmaze has no parameter size; its parameters are: grid_size, spontaneous"),
        ("panflute", {"spontaneous": "yes"}, "spontaneous must be true or false"),
    ],
)
def test_bad_parameters_name_the_parameter_and_range(name, params, match):
    with pytest.raises(ValueError, match=match):
        envs.make(name, 1, 0, **params)


def test_bad_actions_are_refused():
    env = envs.make("procmaze", 2, 0)
    env.reset()
    with pytest.raises(ValueError, match=r"actions must be in \[0, 4\]"):
        env.step(np.array([0, 5]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(np.array([0]))


@pytest.mark.parametrize(
    "gym_id",
    ["mbgen/PanFlute-v0", "mbgen/ButtonGrid-v0", "mbgen/ProcMaze-v0", "mbgen/OpenGrid-v0", "mbgen/WallGrid3x3-v0"],
)
def test_gymnasium_checker_passes(gym_id):
    env = gymnasium.make(gym_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    for _ in range(120):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()


def test_gymnasium_params_pass_through():
    env = gymnasium.make("mbgen/ProcMaze-v0", grid_size=6)
    assert env.observation_space.n == 6 * 6 * 4
    env2 = gymnasium.make("mbgen/PanFlute-v0", num_pipes=3, spontaneous=False)
    assert env2.action_space.n == 3

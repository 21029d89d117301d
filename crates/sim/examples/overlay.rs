//! A longer or bigger overlay simulation than CI runs, printing convergence as it goes.
//!
//! `cargo run --release -p tributary-sim --example overlay -- [NODES] [LOSS] [SEED] [LIMIT_SECS]`
//! (defaults: 500 nodes, no loss, seed 1, 1800 virtual seconds). Every 10 virtual seconds it
//! prints how many nodes are healthy and what the others lack.

use std::time::{Duration, Instant};

use tributary_sim::{Sim, SimConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let nodes: usize = arg(0, "500").parse().expect("NODES is a number");
    let loss: f64 = arg(1, "0").parse().expect("LOSS is a number");
    let seed: u64 = arg(2, "1").parse().expect("SEED is a number");
    let limit: u64 = arg(3, "1800").parse().expect("LIMIT_SECS is a number");
    let mut config = SimConfig::new(seed);
    config.loss = loss;
    let mut sim = Sim::new(config);
    let wall = Instant::now();
    sim.add_node(false).expect("starts");
    for _ in 1..nodes {
        sim.run_for(Duration::from_millis(100)).expect("runs");
        let i = sim.add_node(false).expect("starts");
        sim.bootstrap(i, 0);
    }
    let joined = sim.elapsed();
    println!("{nodes} nodes joined by {joined:?} (seed {seed}, loss {loss})");
    let mut healthy = false;
    while sim.elapsed() < Duration::from_secs(limit) && !healthy {
        healthy = sim
            .run_until(sim.elapsed() + Duration::from_secs(10), Sim::all_healthy)
            .expect("runs");
        let health = sim.health();
        let ok = health.iter().filter(|(_, h)| h.is_healthy()).count();
        let unknown: usize = health.iter().map(|(_, h)| h.unknown_neighbours.len()).sum();
        let unconnected: usize = health
            .iter()
            .map(|(_, h)| h.unconnected_neighbours.len())
            .sum();
        let depth = health
            .iter()
            .filter(|(_, h)| h.depth != h.expected_depth)
            .count();
        let bins = health
            .iter()
            .filter(|(_, h)| !h.unsaturated_bins.is_empty())
            .count();
        println!(
            "t={:>6.1}s healthy {ok}/{} unknown-nn {unknown} unconnected-nn {unconnected} depth-off {depth} unsaturated {bins} {:?}",
            sim.elapsed().as_secs_f64(),
            health.len(),
            sim.stats()
        );
    }
    let overlays: Vec<_> = (0..sim.len())
        .map(|i| sim.node(i).map(|n| n.overlay()))
        .collect();
    for (i, h) in sim
        .health()
        .into_iter()
        .filter(|(_, h)| !h.is_healthy())
        .take(5)
    {
        let me = sim.node(i).expect("running");
        println!(
            "node {i} depth {} cut {} expected {}",
            me.table().depth(),
            me.table().neighbourhood_cut(),
            h.expected_depth
        );
        for a in &h.unconnected_neighbours {
            let j = overlays
                .iter()
                .position(|o| *o == Some(*a))
                .expect("a node");
            let other = sim.node(j).expect("running");
            println!(
                "  missing node {j} po {} state {:?} its depth {} cut {} it knows me {} state {:?}",
                tributary_chunk::proximity(&me.overlay(), a),
                me.table().dial_state(a),
                other.table().depth(),
                other.table().neighbourhood_cut(),
                other.table().record(&me.overlay()).is_some(),
                other.table().dial_state(&me.overlay()),
            );
        }
    }
    println!(
        "{} after {:?} virtual ({:?} after the last join), {:?} wall",
        if healthy { "healthy" } else { "NOT healthy" },
        sim.elapsed(),
        sim.elapsed() - joined,
        wall.elapsed()
    );
}

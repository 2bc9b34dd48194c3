//! What a run held in memory keeps of its weights while it prunes: each decoder layer's original is freed once
//! its pruned replacement is in place, so the weights never take more than the model's size plus one layer.
//! Counted by a global allocator that tracks live bytes (this binary has one test, so nothing else allocates
//! beside it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::atomic::{AtomicIsize, Ordering};

use burn::backend::{Autodiff, Flex};
use prunelab::model::random::RandomWeights;
use prunelab::model::shapes::known_shape;
use prunelab::model::tensors::tensor_specs;
use prunelab::model::{Llama, ModelConfig};
use prunelab::progress::{Progress, ProgressEvent, Silent};
use prunelab::prune::calib::sample_windows;
use prunelab::prune::compensate::Compensation;
use prunelab::prune::pipeline::prune;
use prunelab::prune::recipe::LayerRange;
use prunelab::prune::{Importance, Recipe};

/// The system allocator, counting the bytes it has handed out and not yet taken back.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to `System` unchanged; the counter only adds and subtracts the sizes it was given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The live bytes after each layer of the sequential pass (its "layers" reports), in order.
struct LiveAfterLayers(RefCell<Vec<isize>>);

impl Progress for LiveAfterLayers {
    fn report(&self, event: ProgressEvent<'_>) {
        if event.stage == "layers" && event.done > 0 {
            let live = LIVE.load(Ordering::SeqCst);
            // Reserved up front: pushing allocates nothing.
            self.0.borrow_mut().push(live);
        }
    }
}

/// Bytes of decoder layer `l`'s weights in f32.
fn layer_bytes(c: &ModelConfig, l: usize) -> isize {
    let params: usize = tensor_specs(c)
        .iter()
        .filter(|s| s.layer == Some(l))
        .map(|s| s.numel())
        .sum();
    4 * params as isize
}

/// flap + ls at 50% over all 8 layers of a `tiny`-shaped model (hidden 128, MLP 344, 4 heads in 2 KV groups):
/// after layer `k` is pruned, the live bytes differ from those after the first by exactly what the weights
/// lost, `Σ_{1 ≤ l ≤ k} (pruned − original layer l)` (each layer ≈ 0.36 MB smaller), within 8 KiB a layer for
/// the scores and plans the pass collects (measured: 2.8–3.8 KB). Were the original layers kept until the pass
/// ends, each layer would add its pruned replacement instead (measured: +0.37 MB a layer).
#[test]
fn a_pruned_layer_frees_its_original_weights() {
    let mut json = known_shape("tiny").unwrap();
    json["num_hidden_layers"] = 8.into();
    let cfg = ModelConfig::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
    let ids: Vec<u32> = (0..4000u32)
        .map(|i| (i * 7919 + i / 3) % cfg.vocab_size as u32)
        .collect();
    let calib = sample_windows(&ids, 4, 32, 1).unwrap();
    let recipe = Recipe {
        importance: Importance::Flap,
        compensation: Compensation::Ls,
        ratio: Some(0.5),
        layers: Some(LayerRange { start: 0, end: 8 }),
        ..Recipe::default()
    };
    let device = Default::default();
    let weights = RandomWeights::new(&cfg, 5, 0.05);
    // The matmul kernels keep a scratch buffer per thread (64 MiB under faer's solves, L2-sized under burn's
    // products), made on a thread's first product, on whichever thread rayon gives the work. One thread for
    // each, and a first pass makes every buffer before the counted one.
    faer::set_global_parallelism(faer::Par::Seq);
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    let model = Llama::<Autodiff<Flex>>::load(&cfg, &weights, &device).unwrap();
    let warm = pollster::block_on(prune(model.clone(), &recipe, &calib, &device, &Silent)).unwrap();
    drop(warm);
    let progress = LiveAfterLayers(RefCell::new(Vec::with_capacity(64)));
    let out = pollster::block_on(prune(model, &recipe, &calib, &device, &progress)).unwrap();

    let live = progress.0.into_inner();
    let pruned = &out.model.config;
    assert_eq!(live.len(), 8);
    let mut lost = 0;
    for k in 1..8 {
        lost += layer_bytes(pruned, k) - layer_bytes(&cfg, k);
        let grown = live[k] - live[0];
        assert!(
            (grown - lost).abs() <= 8 * 1024 * k as isize,
            "after layer {k}: live bytes changed by {grown}, the weights by {lost}"
        );
    }
    assert!(lost < -7 * 300_000, "the layers lost {lost} bytes");
}

//! Each server killed in turn under load: calls fail fast, then recover, without leaking fds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use backend_pool::{Error, ErrorClass, HealthState, PoolManager, ServiceConfig};

use crate::common::*;
use crate::support::*;

/// The cheap idempotent request each load caller repeats, per service.
fn probe_call(m: &PoolManager, service: &str) -> Result<(), Error> {
    let path = match service {
        "litellm" => "/v1/models",
        "wan2gp" => "/gradio_api/info",
        "upscaler" => "/config",
        "rvc" => "/models",
        _ => "/prompt",
    };
    m.http(service)?.get(path).call()?.error_for_status()?;
    Ok(())
}

struct Outcome {
    at: Instant,
    service: usize,
    result: Result<(), (ErrorClass, String)>,
}

#[test]
#[ignore = "needs tests/backends/start.sh"]
fn killing_each_server_in_turn_under_load_fails_fast_then_recovers_without_fd_leaks() {
    const PER_SERVICE: usize = 3;
    let five = Five::get();
    let _restore = RestoreOnDrop(five.all().iter().map(|(_, b)| (*b).clone()).collect());
    let fds_before = open_fds();
    let fast = |s: ServiceConfig| ServiceConfig {
        health_interval_ms: 300,
        health_timeout_ms: 500,
        unhealthy_after: 2,
        wait_timeout_ms: 3_000,
        connect_timeout_ms: 1_000,
        ..s
    };
    let m = Arc::new(manager(
        100,
        vec![
            fast(litellm_service("litellm", &five.litellm, 4)),
            fast(gradio_service("wan2gp", &five.wan2gp, 4)),
            fast(gradio_service("upscaler", &five.upscaler, 4)),
            fast(rvc_service(&five.rvc, 4)),
            fast(comfy_service(&five.comfyui, 4, 3, 1)),
        ],
    ));
    let names: Vec<&'static str> = five.all().iter().map(|(n, _)| *n).collect();
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..names.len() * PER_SERVICE)
        .map(|c| {
            let (m, outcomes, stop, calls) = (
                Arc::clone(&m),
                Arc::clone(&outcomes),
                Arc::clone(&stop),
                Arc::clone(&calls),
            );
            let (service, name) = (c % names.len(), names[c % names.len()]);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let result = probe_call(&m, name).map_err(|e| (e.class(), e.to_string()));
                    calls.fetch_add(1, Ordering::Relaxed);
                    outcomes.lock().unwrap().push(Outcome {
                        at: Instant::now(),
                        service,
                        result,
                    });
                    thread::sleep(Duration::from_millis(40));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    assert!(eventually(Duration::from_secs(5), || names
        .iter()
        .all(|n| m.health(n).unwrap().state == HealthState::Healthy)));

    for (index, (name, backend)) in five.all().into_iter().enumerate() {
        let killed = Instant::now();
        backend.kill();
        let kill_took = killed.elapsed();
        let went_down = eventually(Duration::from_secs(10), || {
            m.health(name).unwrap().state == HealthState::Unhealthy
        });
        let to_unhealthy = killed.elapsed();
        assert!(went_down, "{name}: still {:?}", m.health(name).unwrap());
        let t = Instant::now();
        let err = probe_call(&m, name).unwrap_err();
        let fail_fast = t.elapsed();
        assert_eq!(err.class(), ErrorClass::Unavailable, "{name}: {err:?}");
        assert!(
            fail_fast < Duration::from_millis(50),
            "{name}: {fail_fast:?}"
        );
        if name == "comfyui" {
            let ws_err = m.websocket("comfyui").unwrap_err();
            assert_eq!(ws_err.class(), ErrorClass::Unavailable, "{ws_err:?}");
        }
        let starting = Instant::now();
        backend.start();
        let restarted = Instant::now();
        let came_back = eventually(Duration::from_secs(15), || {
            m.health(name).unwrap().state == HealthState::Healthy
        });
        assert!(came_back, "{name}: still {:?}", m.health(name).unwrap());
        let recovered = Instant::now();
        probe_call(&m, name).unwrap_or_else(|e| panic!("{name} after recovery: {e:?}"));
        if name == "comfyui" {
            let run = comfy_job(&m, 2, 0.01).unwrap();
            assert_eq!(run.progress, [1, 2]);
        }
        thread::sleep(Duration::from_millis(1500));

        let log = outcomes.lock().unwrap();
        let mut classes: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut samples = Vec::new();
        for o in log.iter().filter(|o| o.at >= killed && o.at <= recovered) {
            match &o.result {
                Ok(()) => {}
                Err((class, text)) => {
                    if o.service == index {
                        *classes.entry(class.name()).or_default() += 1;
                        if samples.len() < 3 && *class != ErrorClass::Unavailable {
                            samples.push(text.clone());
                        }
                    } else {
                        panic!("{}: failed while {name} was down: {text}", names[o.service]);
                    }
                }
            }
        }
        let after: Vec<_> = log
            .iter()
            .filter(|o| o.service == index && o.at > recovered + Duration::from_millis(200))
            .collect();
        let failed_after: Vec<_> = after
            .iter()
            .filter_map(|o| o.result.as_ref().err())
            .collect();
        println!(
            "{name:9} killed (kill script {kill_took:.1?}): unhealthy within {to_unhealthy:.1?}, \
             fail-fast in {fail_fast:.1?}; start script {:.1?}, pool healthy {:.1?} after it; \
             {name}'s errors by class {classes:?} e.g. {samples:?}; {} calls after recovery, \
             {} failed; other services: no error",
            restarted - starting,
            recovered - restarted,
            after.len(),
            failed_after.len()
        );
        for class in classes.keys() {
            assert!(
                ["connect", "closed", "unavailable"].contains(class),
                "{name}: unexpected error class {class}: {classes:?} {samples:?}"
            );
        }
        assert!(
            classes.get("unavailable").copied().unwrap_or(0) > 0,
            "{name}: {classes:?}"
        );
        assert!(
            !after.is_empty() && failed_after.is_empty(),
            "{name}: {failed_after:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    let fds_loaded = open_fds();
    let stats = m.stats();
    println!(
        "{} calls in all; fds: {fds_before} before, {fds_loaded} with the pools open",
        calls.load(Ordering::Relaxed)
    );
    let cap: usize = stats
        .services
        .iter()
        .map(|s| s.http.as_ref().map_or(0, |p| p.max) + s.websocket.as_ref().map_or(0, |p| p.max))
        .sum();
    assert!(
        fds_loaded <= fds_before + cap,
        "{fds_loaded} fds open, cap {cap}"
    );
    let report = m.shutdown(Duration::from_secs(5)).unwrap();
    assert!(report.still_in_use.is_empty(), "{report:?}");
    drop(m);
    assert!(
        eventually(Duration::from_secs(3), || open_fds() <= fds_before),
        "fd leak: {fds_before} before, {} after shutdown",
        open_fds()
    );
}

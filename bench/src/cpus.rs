//! CPU lists (`0,2-3`) and `--isolate`: the datapath on its cores, everything else off them.
//!
//! Isolation is by affinity, as a lab without cpusets would set it up: tapway-bench confines
//! its own thread to the other CPUs before it starts anything, so every thread it spawns
//! (generator, sink, ping-pong, the floor before it pins itself) and every process (iperf3,
//! tapwayd, the CNI plugins) inherits that mask; tapwayd's workers are then pinned onto the
//! datapath CPUs by its `--cores`, and the floor's thread by itself.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::report::Isolation;

/// Parses `0,2-3` into `[0, 2, 3]` (sorted, without repeats). Empty: no CPU.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim().parse::<usize>().map_err(|_| format!("`{part}` is not a CPU or a range of CPUs"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("`{part}` is not a range of CPUs"));
                }
                v.extend(a..=b);
            }
            None => v.push(num(part)?),
        }
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// `[0, 2, 3]` as `0,2,3`.
pub fn format_list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// The CPUs this thread may run on.
pub fn allowed() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Which CPUs go to the datapath and which to the rest: `datapath` if given (it must be among
/// `allowed`), else the last allowed CPU; the rest is every other allowed CPU, of which there
/// must be one at least.
pub fn plan(allowed: &[usize], datapath: &[usize]) -> Result<Isolation, String> {
    let datapath: Vec<usize> =
        if datapath.is_empty() { allowed.last().copied().into_iter().collect() } else { datapath.to_vec() };
    if let Some(c) = datapath.iter().find(|c| !allowed.contains(c)) {
        return Err(format!("CPU {c} is not one this process may use ({})", format_list(allowed)));
    }
    let other: Vec<usize> = allowed.iter().copied().filter(|c| !datapath.contains(c)).collect();
    if datapath.is_empty() || other.is_empty() {
        return Err(format!(
            "--isolate needs a CPU for the datapath and another for the rest; this process may use {}",
            format_list(allowed)
        ));
    }
    Ok(Isolation { datapath_cpus: datapath, other_cpus: other })
}

/// Confines the calling thread (and what it starts from now on) to `cpus`.
pub fn confine(cpus: &[usize]) -> Result<(), String> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|e| format!("CPU {c}: {e}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity({}): {e}", format_list(cpus)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        assert_eq!(parse_list("1"), Ok(vec![1]));
        assert_eq!(parse_list("3, 0-2,2"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_list(""), Ok(vec![]));
        assert!(parse_list("a").is_err());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("1-").is_err());
        assert_eq!(format_list(&[0, 2, 3]), "0,2,3");
    }

    #[test]
    fn isolation_takes_the_last_cpu_unless_told() {
        let i = plan(&[0, 1], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((i.datapath_cpus, i.other_cpus), (vec![1], vec![0]));
        let i = plan(&[0, 1, 2, 3], &[2, 3]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((i.datapath_cpus, i.other_cpus), (vec![2, 3], vec![0, 1]));
        assert!(plan(&[0], &[]).is_err(), "one CPU cannot be split");
        assert!(plan(&[0, 1], &[0, 1]).is_err(), "nothing left for the load");
        assert!(plan(&[0, 1], &[5]).is_err(), "not an allowed CPU");
    }
}

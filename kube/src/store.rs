//! What the watcher holds of the cluster, and the deltas it hands tapwayd.
//!
//! The watch streams write reduced objects ([`Svc`], [`Slice`]) into the [`Store`], which
//! marks the Services they touch as dirty. [`Store::take_update`] then rebuilds the service
//! ports of the dirty Services only, and returns what changed: that is one sync, however many
//! events were collected before it (the coalescing window lives in [`crate::watch`]). A relist
//! ([`Store::replace_services`], [`Store::replace_slices`]) is diffed against what is held, so
//! objects deleted while the watch was down go even though no DELETED event said so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tapway_api::{ServiceKey, ServiceSpec};

use crate::convert::{already_served, specs_of, ObjKey, Slice, Svc};

/// A change to the service table: what one sync applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// `upserts` is the whole table: every service port not in it goes (the first sync after
    /// start, which replaces what tapwayd restored from its services file).
    pub full: bool,
    /// Service ports created or changed (all of them when `full`), sorted by key.
    pub upserts: Vec<ServiceSpec>,
    /// Service ports removed, sorted (empty when `full`).
    pub removes: Vec<ServiceKey>,
    /// Services whose ports were rebuilt.
    pub rebuilt: usize,
}

/// The watcher's view of the cluster and of the service table it programmed.
#[derive(Debug, Default)]
pub struct Store {
    /// Services by (namespace, name); `None`: it exists but nothing of it is served.
    services: HashMap<ObjKey, Option<Svc>>,
    /// EndpointSlices by (namespace, slice name); `None`: exists, backs nothing.
    slices: HashMap<ObjKey, Option<Slice>>,
    /// Slice names of each Service.
    by_owner: HashMap<ObjKey, BTreeSet<String>>,
    /// Services whose ports must be rebuilt.
    dirty: HashSet<ObjKey>,
    /// The keys each Service owns in `table`.
    owned: HashMap<ObjKey, Vec<ServiceKey>>,
    /// The service table as programmed, with each port's owner.
    table: BTreeMap<ServiceKey, (ObjKey, ServiceSpec)>,
    /// Both lists have been received at least once.
    services_listed: bool,
    slices_listed: bool,
    /// Whether the first update (a full one) went out.
    synced: bool,
    /// Ports released during one update, to tell an unchanged rebuild from a change.
    released: HashMap<ServiceKey, ServiceSpec>,
    /// Service ports left out because another Service has the key (last sync).
    pub conflicts: Vec<String>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Services held.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// EndpointSlices held.
    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// Service ports programmed.
    pub fn port_count(&self) -> usize {
        self.table.len()
    }

    /// Whether both kinds have been listed, so a sync would not program half a cluster.
    pub fn ready(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    /// A Service was added or modified.
    pub fn upsert_service(&mut self, key: ObjKey, svc: Option<Svc>) {
        if self.services.get(&key) != Some(&svc) {
            self.services.insert(key.clone(), svc);
            self.dirty.insert(key);
        }
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, key: &ObjKey) {
        if self.services.remove(key).is_some() {
            self.dirty.insert(key.clone());
        }
    }

    /// An EndpointSlice was added or modified.
    pub fn upsert_slice(&mut self, key: ObjKey, slice: Option<Slice>) {
        if self.slices.get(&key) == Some(&slice) {
            return;
        }
        self.delete_slice(&key);
        if let Some(s) = &slice {
            self.by_owner.entry(s.owner()).or_default().insert(key.1.clone());
            self.dirty.insert(s.owner());
        }
        self.slices.insert(key, slice);
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&mut self, key: &ObjKey) {
        if let Some(Some(old)) = self.slices.remove(key) {
            let owner = old.owner();
            if let Some(names) = self.by_owner.get_mut(&owner) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.by_owner.remove(&owner);
                }
            }
            self.dirty.insert(owner);
        }
    }

    /// A complete list of Services (the initial list or a relist): what is not in it was
    /// deleted meanwhile. The next update is a full one, which also takes back what a forced
    /// `service set`/`sync` changed behind the watch. Returns how many Services went.
    pub fn replace_services(&mut self, all: HashMap<ObjKey, Option<Svc>>) -> usize {
        self.synced = false;
        let gone: Vec<ObjKey> = self.services.keys().filter(|k| !all.contains_key(*k)).cloned().collect();
        for k in &gone {
            self.delete_service(k);
        }
        for (k, v) in all {
            self.upsert_service(k, v);
        }
        self.services_listed = true;
        gone.len()
    }

    /// A complete list of EndpointSlices; as [`Store::replace_services`].
    pub fn replace_slices(&mut self, all: HashMap<ObjKey, Option<Slice>>) -> usize {
        self.synced = false;
        let gone: Vec<ObjKey> = self.slices.keys().filter(|k| !all.contains_key(*k)).cloned().collect();
        for k in &gone {
            self.delete_slice(k);
        }
        for (k, v) in all {
            self.upsert_slice(k, v);
        }
        self.slices_listed = true;
        gone.len()
    }

    /// Whether an update is due: something is dirty, or the first sync has not gone out.
    pub fn pending(&self) -> bool {
        self.ready() && (!self.synced || !self.dirty.is_empty())
    }

    /// Rebuilds the dirty Services' ports and returns what changed, or `None` when nothing
    /// did (or the lists are not both in yet).
    pub fn take_update(&mut self) -> Option<Update> {
        if !self.pending() {
            return None;
        }
        let mut dirty: Vec<ObjKey> = self.dirty.drain().collect();
        // Who wins a key two Services claim must not depend on hash order.
        dirty.sort();
        let rebuilt = dirty.len();
        // The last word on each key changed in this update: Some = upsert, None = remove.
        let mut delta: BTreeMap<ServiceKey, Option<ServiceSpec>> = BTreeMap::new();
        let mut notes = Vec::new();
        self.conflicts.clear();
        // Release every dirty Service's keys first, so a key moving between two of them in
        // one update lands on its new owner.
        for owner in &dirty {
            for k in self.owned.remove(owner).unwrap_or_default() {
                if self.table.get(&k).is_some_and(|(o, _)| o == owner) {
                    if let Some((_, old)) = self.table.remove(&k) {
                        delta.insert(k, None);
                        // Remember what it was, to send nothing if it comes back unchanged.
                        self.released.insert(k, old);
                    }
                }
            }
        }
        for owner in &dirty {
            let Some(Some(svc)) = self.services.get(owner) else { continue };
            let slices: Vec<&Slice> = self
                .by_owner
                .get(owner)
                .into_iter()
                .flatten()
                .filter_map(|n| self.slices.get(&(owner.0.clone(), n.clone())).and_then(Option::as_ref))
                .collect();
            let mut keys = Vec::new();
            for spec in specs_of(svc, &slices, &mut notes) {
                if let Some((other, s)) = self.table.get(&spec.key) {
                    let msg = already_served(svc, &spec, &s.name);
                    tracing::debug!(other = %format!("{}/{}", other.0, other.1), "{msg}");
                    self.conflicts.push(msg);
                    continue;
                }
                let key = spec.key;
                keys.push(key);
                if self.released.get(&key) == Some(&spec) {
                    delta.remove(&key);
                } else {
                    delta.insert(key, Some(spec.clone()));
                }
                self.table.insert(key, (owner.clone(), spec));
            }
            self.owned.insert(owner.clone(), keys);
        }
        self.released.clear();
        for n in notes {
            tracing::debug!("{n}");
        }
        let full = !self.synced;
        self.synced = true;
        if full {
            let upserts = self.table.values().map(|(_, s)| s.clone()).collect();
            return Some(Update { full, upserts, removes: Vec::new(), rebuilt });
        }
        let mut u = Update { full, rebuilt, ..Update::default() };
        for (k, v) in delta {
            match v {
                Some(spec) => u.upserts.push(spec),
                None => u.removes.push(k),
            }
        }
        Some(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use tapway_api::{Affinity, BackendSpec, Protocol};

    use crate::convert::SvcPort;

    fn k(ns: &str, n: &str) -> ObjKey {
        (ns.to_string(), n.to_string())
    }

    fn svc(name: &str, vip: &str) -> Svc {
        Svc {
            ns: "d".into(),
            name: name.into(),
            vips: vec![vip.parse().unwrap()],
            ports: vec![SvcPort { name: String::new(), port: 80, protocol: Protocol::Tcp }],
            affinity: Affinity::None,
        }
    }

    fn slice(svc: &str, ips: &[&str]) -> Slice {
        Slice {
            ns: "d".into(),
            label: format!("d/{svc}-x"),
            service: svc.into(),
            ports: vec![(String::new(), Protocol::Tcp, 8080)],
            endpoints: ips.iter().map(|i| (i.parse::<IpAddr>().unwrap(), true, true, false)).collect(),
        }
    }

    fn listed(st: &mut Store, svcs: Vec<Svc>, slices: Vec<(&str, Slice)>) {
        st.replace_services(svcs.into_iter().map(|s| (k("d", &s.name.clone()), Some(s))).collect());
        st.replace_slices(slices.into_iter().map(|(n, s)| (k("d", n), Some(s))).collect());
    }

    fn backends(u: &Update) -> Vec<Vec<IpAddr>> {
        u.upserts.iter().map(|s| s.backends.iter().map(|b: &BackendSpec| b.ip).collect()).collect()
    }

    #[test]
    fn nothing_before_both_lists_then_one_full_update() {
        let mut st = Store::new();
        st.replace_services([(k("d", "a"), Some(svc("a", "10.96.0.1")))].into());
        assert!(!st.ready());
        assert_eq!(st.take_update(), None);
        st.replace_slices([(k("d", "a-1"), Some(slice("a", &["10.0.0.1"])))].into());
        let u = st.take_update().unwrap();
        assert!(u.full);
        assert_eq!(u.upserts.len(), 1);
        assert_eq!(backends(&u), [vec!["10.0.0.1".parse::<IpAddr>().unwrap()]]);
        assert_eq!(st.take_update(), None, "nothing changed since");
    }

    #[test]
    fn a_burst_is_one_update_rebuilding_only_what_changed() {
        let mut st = Store::new();
        listed(
            &mut st,
            vec![svc("a", "10.96.0.1"), svc("b", "10.96.0.2")],
            vec![("a-1", slice("a", &["10.0.0.1"]))],
        );
        st.take_update().unwrap();
        // 100 endpoint changes to a, none to b.
        for i in 0..100u8 {
            let ips: Vec<String> = (0..=i).map(|j| format!("10.0.1.{j}")).collect();
            let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
            st.upsert_slice(k("d", "a-1"), Some(slice("a", &ips)));
        }
        let u = st.take_update().unwrap();
        assert!(!u.full);
        assert_eq!(u.rebuilt, 1, "only a was rebuilt");
        assert_eq!(u.upserts.len(), 1);
        assert_eq!(u.upserts[0].backends.len(), 100);
        assert!(u.removes.is_empty());
        assert_eq!(st.take_update(), None);
    }

    #[test]
    fn an_unchanged_modification_sends_nothing() {
        let mut st = Store::new();
        listed(&mut st, vec![svc("a", "10.96.0.1")], vec![("a-1", slice("a", &["10.0.0.1"]))]);
        st.take_update().unwrap();
        st.upsert_slice(k("d", "a-1"), Some(slice("a", &["10.0.0.2"])));
        st.upsert_slice(k("d", "a-1"), Some(slice("a", &["10.0.0.1"])));
        let u = st.take_update().unwrap();
        assert!(u.upserts.is_empty() && u.removes.is_empty(), "{u:?}");
    }

    #[test]
    fn relist_diff_removes_what_was_deleted_meanwhile_and_adds_what_came() {
        let mut st = Store::new();
        listed(
            &mut st,
            vec![svc("a", "10.96.0.1"), svc("gone", "10.96.0.9")],
            vec![("a-1", slice("a", &["10.0.0.1"])), ("gone-1", slice("gone", &["10.0.0.9"]))],
        );
        st.take_update().unwrap();
        assert_eq!(st.port_count(), 2);
        // A relist after a 410: "gone" is not there any more, "new" is, no events said so.
        listed(
            &mut st,
            vec![svc("a", "10.96.0.1"), svc("new", "10.96.0.3")],
            vec![("a-1", slice("a", &["10.0.0.1"])), ("new-1", slice("new", &["10.0.0.3"]))],
        );
        let u = st.take_update().unwrap();
        // A full update: the whole table, so what was not in the list goes.
        assert!(u.full);
        assert_eq!(u.rebuilt, 2, "only gone and new were rebuilt");
        let names: Vec<&str> = u.upserts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["d/a", "d/new"]);
        assert_eq!((st.service_count(), st.slice_count(), st.port_count()), (2, 2, 2));
        assert_eq!(st.take_update(), None);
    }

    #[test]
    fn deleting_a_slice_empties_the_service_deleting_the_service_removes_it() {
        let mut st = Store::new();
        listed(&mut st, vec![svc("a", "10.96.0.1")], vec![("a-1", slice("a", &["10.0.0.1"]))]);
        st.take_update().unwrap();
        st.delete_slice(&k("d", "a-1"));
        let u = st.take_update().unwrap();
        assert_eq!(u.upserts.len(), 1);
        assert!(u.upserts[0].backends.is_empty());
        st.delete_service(&k("d", "a"));
        let u = st.take_update().unwrap();
        assert!(u.upserts.is_empty());
        assert_eq!(u.removes.len(), 1);
        assert_eq!(st.port_count(), 0);
    }

    #[test]
    fn a_key_claimed_twice_goes_to_one_owner() {
        let mut st = Store::new();
        listed(&mut st, vec![svc("a", "10.96.0.1"), svc("b", "10.96.0.1")], vec![]);
        let u = st.take_update().unwrap();
        assert_eq!(u.upserts.len(), 1);
        assert_eq!(u.upserts[0].name, "d/a");
        assert_eq!(st.conflicts.len(), 1);
        // a gives the VIP up and b changes in the same update: b gets it.
        st.delete_service(&k("d", "a"));
        let mut b = svc("b", "10.96.0.1");
        b.affinity = Affinity::ClientIp { timeout: 5 };
        st.upsert_service(k("d", "b"), Some(b));
        let u = st.take_update().unwrap();
        assert!(u.removes.is_empty());
        assert_eq!(u.upserts.len(), 1);
        assert_eq!(u.upserts[0].name, "d/b");
    }
}

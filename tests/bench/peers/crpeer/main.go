// The standalone DevServer job in Go with controller-runtime, as its book writes an operator:
// one reconciler for DevServers that owns their home PVC, Deployment and Service (owner
// references, so the child's events wake the owner), CreateOrUpdate for each child, and the
// status written once the Deployment has its pod available. Written for the scale bench only.
//
// Settings: controller-runtime's defaults (one shared cache), plus what its docs recommend at
// scale: MaxConcurrentReconciles 4 (as many workers as devserver's), managedFields stripped from
// cached objects, unstructured reads from the cache, and the cache limited by label to the
// objects this peer owns (DevServers marked for it, children it labelled); no client-side rate
// limit (ctrl.GetConfig's 20 QPS would throttle it where devserver and kopf are not). Children
// are compared on the fields it owns, so the server's defaults never read as a change.
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

var (
	devServerGVK = schema.GroupVersionKind{Group: "devservers.io", Version: "v1", Kind: "DevServer"}
	flavorGVK    = schema.GroupVersionKind{Group: "devservers.io", Version: "v1", Kind: "DevServerFlavor"}
	managed      = map[string]string{"app.kubernetes.io/managed-by": "cr-peer"}
	contender    = map[string]string{"bench.devservers.io/contender": "go"}
)

type reconciler struct{ client.Client }

func newDevServer() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(devServerGVK)
	return u
}

func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ds := newDevServer()
	if err := r.Get(ctx, req.NamespacedName, ds); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	spec, _, _ := unstructured.NestedMap(ds.Object, "spec")
	flavorName, _ := spec["flavor"].(string)
	image, _ := spec["image"].(string)
	flavor := &unstructured.Unstructured{}
	flavor.SetGroupVersionKind(flavorGVK)
	if err := r.Get(ctx, client.ObjectKey{Name: flavorName}, flavor); err != nil {
		return ctrl.Result{RequeueAfter: 10 * time.Second}, client.IgnoreNotFound(err)
	}
	requirements := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for kind, into := range map[string]corev1.ResourceList{"requests": requirements.Requests, "limits": requirements.Limits} {
		amounts, _, _ := unstructured.NestedStringMap(flavor.Object, "spec", "resources", kind)
		for name, amount := range amounts {
			into[corev1.ResourceName(name)] = resource.MustParse(amount)
		}
	}
	name, ns := ds.GetName(), ds.GetNamespace()
	childLabels := map[string]string{"devservers.io/name": name}
	for k, v := range managed {
		childLabels[k] = v
	}

	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name + "-home", Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, claim, func() error {
		claim.Labels = childLabels
		if claim.CreationTimestamp.IsZero() { // its spec is immutable once made
			claim.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
			claim.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}
		}
		return controllerutil.SetControllerReference(ds, claim, r.Scheme())
	}); err != nil {
		return ctrl.Result{}, err
	}

	replicas := int32(1)
	if stopped, _, _ := unstructured.NestedBool(ds.Object, "spec", "stopped"); stopped {
		replicas = 0
	}
	deployment := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, deployment, func() error {
		deployment.Labels = childLabels
		deployment.Spec.Replicas = &replicas
		containers := deployment.Spec.Template.Spec.Containers
		if !deployment.CreationTimestamp.IsZero() && len(containers) == 1 &&
			containers[0].Image == image && equality.Semantic.DeepEqual(containers[0].Resources, requirements) {
			// only the fields we own are compared: the server's defaults are not a change
			return controllerutil.SetControllerReference(ds, deployment, r.Scheme())
		}
		deployment.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
		deployment.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"devservers.io/name": name}}
		deployment.Spec.Template.Labels = childLabels
		deployment.Spec.Template.Spec.Containers = []corev1.Container{{
			Name:         "dev",
			Image:        image,
			Resources:    requirements,
			Ports:        []corev1.ContainerPort{{Name: "ssh", ContainerPort: 2222}},
			VolumeMounts: []corev1.VolumeMount{{Name: "home", MountPath: "/home/dev"}},
		}}
		deployment.Spec.Template.Spec.Volumes = []corev1.Volume{{
			Name:         "home",
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name + "-home"}},
		}}
		return controllerutil.SetControllerReference(ds, deployment, r.Scheme())
	}); err != nil {
		return ctrl.Result{}, err
	}

	service := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, service, func() error {
		service.Labels = childLabels
		service.Spec.Selector = map[string]string{"devservers.io/name": name}
		if len(service.Spec.Ports) != 1 || service.Spec.Ports[0].Port != 22 { // defaults are no change
			service.Spec.Ports = []corev1.ServicePort{{Name: "ssh", Port: 22, TargetPort: intstr.FromString("ssh")}}
		}
		return controllerutil.SetControllerReference(ds, service, r.Scheme())
	}); err != nil {
		return ctrl.Result{}, err
	}

	ready := deployment.Status.AvailableReplicas >= 1
	phase, status, reason, message := "Pending", "False", "Starting", "the pod is starting"
	if ready {
		phase, status, reason, message = "Running", "True", "PodReady", "the dev server is up"
	}
	if current, _, _ := unstructured.NestedString(ds.Object, "status", "phase"); current == phase {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(ds.DeepCopy())
	_ = unstructured.SetNestedField(ds.Object, phase, "status", "phase")
	_ = unstructured.SetNestedSlice(ds.Object, []any{map[string]any{
		"type": "Ready", "status": status, "reason": reason, "message": message,
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	}}, "status", "conditions")
	return ctrl.Result{}, r.Status().Patch(ctx, ds, patch)
}

func main() {
	metricsAddr := flag.String("metrics-bind-address", "0", "metrics endpoint (0: off)")
	probeAddr := flag.String("health-probe-bind-address", "127.0.0.1:18082", "health probes")
	flag.Parse()
	ctrl.SetLogger(zap.New())

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	mine := labels.SelectorFromSet(managed)
	marked := labels.SelectorFromSet(contender)
	cfg := ctrl.GetConfigOrDie()
	cfg.QPS = -1 // no client-side rate limit: devserver's client and kopf's have none either
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Client:                 client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics:                metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress: *probeAddr,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				newDevServer():                  {Label: marked},
				&appsv1.Deployment{}:            {Label: mine},
				&corev1.PersistentVolumeClaim{}: {Label: mine},
				&corev1.Service{}:               {Label: mine},
			},
		},
	})
	if err != nil {
		ctrl.Log.Error(err, "manager")
		os.Exit(1)
	}
	_ = mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil })
	err = ctrl.NewControllerManagedBy(mgr).
		For(newDevServer()).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Owns(&corev1.Service{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(&reconciler{mgr.GetClient()})
	if err != nil {
		ctrl.Log.Error(err, "controller")
		os.Exit(1)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		ctrl.Log.Error(err, "start")
		os.Exit(1)
	}
}

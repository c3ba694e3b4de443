package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// objectRoutes edit and delete what people create: sites, halls, phases,
// subnets and tenants. A delete is refused while anything depends on the
// object, and the refusal names what does.
func (s *Server) objectRoutes() []route {
	return []route{
		{method: "PATCH", pattern: "/api/v1/sites/{name}", action: "site.update", summary: "Change a site's description", roles: staff, body: SiteUpdate{}, reply: inventory.Site{}, handle: s.updateSite},
		{method: "DELETE", pattern: "/api/v1/sites/{name}", action: "site.delete", summary: "Remove a site that has no halls", roles: staff, handle: s.deleteSite},
		{method: "PATCH", pattern: "/api/v1/halls/{name}", action: "hall.update", summary: "Move a hall to another site", roles: staff, body: HallUpdate{}, reply: inventory.Hall{}, handle: s.updateHall},
		{method: "DELETE", pattern: "/api/v1/halls/{name}", action: "hall.delete", summary: "Remove a hall that has no phases or racks", roles: staff, handle: s.deleteHall},
		{method: "DELETE", pattern: "/api/v1/halls/{name}/phases/{number}", action: "phase.delete", summary: "Remove a phase that has no racks", roles: staff, handle: s.deletePhase},
		{method: "PATCH", pattern: "/api/v1/subnets/{name}", action: "subnet.update", summary: "Change a subnet's gateway, dynamic range or DNS servers (reservations and unexpired leases are kept whole)", roles: staff, body: SubnetUpdate{}, reply: inventory.Subnet{}, handle: s.updateSubnet},
		{method: "DELETE", pattern: "/api/v1/subnets/{name}", action: "subnet.delete", summary: "Remove a subnet with no reserved addresses and no unexpired leases", roles: staff, handle: s.deleteSubnet},
		{method: "PATCH", pattern: "/api/v1/tenants/{name}", action: "tenant.update", summary: "Change a tenant's description", roles: admin, body: TenantUpdate{}, reply: inventory.Tenant{}, handle: s.updateTenant},
		{method: "DELETE", pattern: "/api/v1/tenants/{name}", action: "tenant.delete", summary: "Remove a tenant that holds no rack, machine, live token or private image", roles: admin, handle: s.deleteTenant},
	}
}

// SiteUpdate changes a site; "" removes the description.
type SiteUpdate struct {
	Description *string `json:"description,omitempty"`
}

// HallUpdate moves a hall to another site.
type HallUpdate struct {
	Site *string `json:"site,omitempty"`
}

// TenantUpdate changes a tenant; "" removes the description.
type TenantUpdate struct {
	Description *string `json:"description,omitempty"`
}

// SubnetUpdate changes a subnet; a field left out is kept. Range is
// FIRST-LAST, or "" to remove the dynamic range; DNS replaces the list
// ([] removes it).
type SubnetUpdate struct {
	Gateway *string   `json:"gateway,omitempty"`
	Range   *string   `json:"range,omitempty"`
	DNS     *[]string `json:"dns,omitempty"`
}

func (s *Server) updateSite(c *call) (int, any, error) {
	var in SiteUpdate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	if in.Description == nil {
		return 0, nil, &inventory.ValidationError{Field: "body", Msg: "names nothing to change: give a description"}
	}
	c.detail = "description"
	out, err := s.inv.EditSite(c.ctx(), c.r.PathValue("name"), *in.Description)
	return http.StatusOK, out, err
}

func (s *Server) deleteSite(c *call) (int, any, error) {
	return http.StatusNoContent, nil, s.inv.DeleteSite(c.ctx(), c.r.PathValue("name"))
}

func (s *Server) updateHall(c *call) (int, any, error) {
	var in HallUpdate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	if in.Site == nil {
		return 0, nil, &inventory.ValidationError{Field: "body", Msg: "names nothing to change: give a site"}
	}
	c.detail = "site=" + *in.Site
	out, err := s.inv.EditHall(c.ctx(), c.r.PathValue("name"), *in.Site)
	return http.StatusOK, out, err
}

func (s *Server) deleteHall(c *call) (int, any, error) {
	return http.StatusNoContent, nil, s.inv.DeleteHall(c.ctx(), c.r.PathValue("name"))
}

func (s *Server) deletePhase(c *call) (int, any, error) {
	hall := c.r.PathValue("name")
	n, err := strconv.Atoi(c.r.PathValue("number"))
	if err != nil {
		return 0, nil, badRequest("phase number %q is not a number", c.r.PathValue("number"))
	}
	c.subject = fmt.Sprintf("hall/%s/phase/%d", hall, n)
	return http.StatusNoContent, nil, s.inv.DeletePhase(c.ctx(), hall, n)
}

func (s *Server) updateSubnet(c *call) (int, any, error) {
	var in SubnetUpdate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	var e inventory.SubnetEdit
	var changed []string
	if in.Gateway != nil {
		e.Gateway = in.Gateway
		changed = append(changed, "gateway="+*in.Gateway)
	}
	if in.Range != nil {
		first, last, err := splitRange(*in.Range)
		if err != nil {
			return 0, nil, err
		}
		e.RangeFirst, e.RangeLast = &first, &last
		changed = append(changed, "range="+*in.Range)
	}
	if in.DNS != nil {
		e.DNS = append([]string{}, *in.DNS...)
		changed = append(changed, "dns="+strings.Join(*in.DNS, ","))
	}
	c.detail = strings.Join(changed, " ")
	out, err := s.inv.EditSubnet(c.ctx(), c.r.PathValue("name"), e)
	return http.StatusOK, out, err
}

// splitRange reads FIRST-LAST; "" is no range.
func splitRange(r string) (first, last string, err error) {
	if r == "" {
		return "", "", nil
	}
	f, l, ok := strings.Cut(r, "-")
	if !ok {
		return "", "", &inventory.ValidationError{Field: "range", Msg: fmt.Sprintf("%q is not FIRST-LAST", r)}
	}
	return strings.TrimSpace(f), strings.TrimSpace(l), nil
}

func (s *Server) deleteSubnet(c *call) (int, any, error) {
	return http.StatusNoContent, nil, s.inv.DeleteSubnet(c.ctx(), c.r.PathValue("name"))
}

func (s *Server) updateTenant(c *call) (int, any, error) {
	var in TenantUpdate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	if in.Description == nil {
		return 0, nil, &inventory.ValidationError{Field: "body", Msg: "names nothing to change: give a description"}
	}
	c.detail = "description"
	out, err := s.inv.EditTenant(c.ctx(), c.r.PathValue("name"), *in.Description)
	return http.StatusOK, out, err
}

func (s *Server) deleteTenant(c *call) (int, any, error) {
	return http.StatusNoContent, nil, s.inv.DeleteTenant(c.ctx(), c.r.PathValue("name"))
}

package api

import "net/http"

// WhoAmI says who a token is: the web console asks once at sign-in to know
// which pages and actions to offer (the API still decides every request).
type WhoAmI struct {
	TokenID string `json:"token_id"`
	Role    string `json:"role"`
	Tenant  string `json:"tenant,omitempty"`
}

func (s *Server) whoamiRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/whoami", action: "token.whoami", summary: "Who the calling token is: its ID, role and tenant", roles: everyone, reply: WhoAmI{}, handle: s.whoami},
	}
}

func (s *Server) whoami(c *call) (int, any, error) {
	return http.StatusOK, WhoAmI{TokenID: c.p.TokenID, Role: string(c.p.Role), Tenant: c.p.Tenant}, nil
}
